"""train -> promote -> import into a real BentoML store under tmp_path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import bentoml
import mlflow
import pytest

from tests.conftest import lr_grid
from training.sweep import run_experiments
from release import ImportFailed
from release.importer import import_production
from release.importer import main as import_main
from training.promote import promote_best

pytestmark = pytest.mark.integration


def _store_snapshot(home: Path) -> dict[str, bytes]:
    if not home.exists():
        return {}
    return {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}


def test_import_labels_match_the_registry_and_reimport_adds_nothing(trained_store):
    promoted = promote_best()
    first = import_production()
    assert first.created
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(trained_store.registered_model_name, "production")
    run = client.get_run(version.run_id)
    model = bentoml.models.get(first.tag)
    assert model.info.labels["registered_model"] == "ClassificationModel"
    assert model.info.labels["registered_version"] == str(version.version) == promoted.version
    assert model.info.labels["run_id"] == version.run_id
    assert model.info.labels["dataset"] == "iris"
    assert model.info.labels["alias"] == "production"
    meta = model.info.metadata
    assert meta["metrics"] == {k: run.data.metrics[k] for k in ("accuracy", "precision", "recall", "f1")}
    assert meta["feature_names"] == ["sepal length (cm)", "sepal width (cm)",
                                     "petal length (cm)", "petal width (cm)"]
    assert meta["class_names"] == ["setosa", "versicolor", "virginica"]
    for relative, digest in meta["sha256"].items():
        assert hashlib.sha256((Path(model.path) / relative).read_bytes()).hexdigest() == digest
    assert {"linear_params.npz", "scaler.skops", "mlflow_model/MLmodel"} <= set(meta["sha256"])

    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    second = import_production()
    assert second.tag == first.tag and not second.created
    assert _store_snapshot(home) == before
    assert len(bentoml.models.list("classification_model")) == 1


def _versions(client, name: str) -> list[str]:
    """The registered versions, oldest first."""
    return sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)


def test_stage_is_the_fallback_when_the_alias_is_missing(trained_store):
    client = mlflow.MlflowClient()
    name = trained_store.registered_model_name
    # Two older versions in stage Production (neither the newest nor the best): the higher is taken.
    lower, higher = _versions(client, name)[:2]
    for version in (lower, higher):
        client.transition_model_version_stage(name, version, "Production")
    result = import_production()
    model = bentoml.models.get(result.tag)
    assert model.info.labels["registered_version"] == higher
    assert model.info.labels["resolved_by"] == "stage-Production"


def test_import_without_production_exits_1_and_leaves_store_unchanged(trained_store, capsys):
    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    assert import_main([]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no production version" in out[0]
    assert _store_snapshot(home) == before


@pytest.mark.parametrize("damage, words", [("corrupt", "scaler artifact .* of run"),
                                            ("delete", "artifact missing")])
def test_damaged_scaler_fails_and_leaves_store_unchanged(mlflow_store, damage, words):
    results = run_experiments(dataset_name="iris", grid=lr_grid([1.0], ["l2"]))
    promote_best()
    run = mlflow.get_run(results[0].run_id)
    scaler = Path(run.info.artifact_uri.removeprefix("file://")) / "scaler" / "scaler.skops"
    if damage == "corrupt":
        scaler.write_bytes(b"not a skops file")
    else:
        scaler.unlink()
    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    with pytest.raises(ImportFailed, match=words):
        import_production()
    assert _store_snapshot(home) == before


def _replace_scaler(run_id: str, preprocess, tmp_path: Path) -> None:
    """Log preprocess, fitted, as the run's scaler artifact in place of the one training logged."""
    import skops.io

    from training.config import SCALER_ARTIFACT

    local = tmp_path / "upload" / Path(SCALER_ARTIFACT).name
    local.parent.mkdir()
    skops.io.dump(preprocess, local)
    mlflow.MlflowClient().log_artifact(run_id, str(local), artifact_path=str(Path(SCALER_ARTIFACT).parent))


@pytest.mark.parametrize("other", ["fitted_on_other_rows", "scaler_without_imputer", "scaler_of_other_columns"])
def test_a_scaler_that_is_not_the_models_is_refused_with_one_line(mlflow_store, tmp_path, capsys, other):
    """A readable, fitted preprocessing that is not the model's own: exit 1, one line, store unchanged."""
    from sklearn.preprocessing import StandardScaler

    from training.data import load_dataset, split_dataset
    from training.models import build_preprocessor

    results = run_experiments(dataset_name="iris", grid=lr_grid([1.0], ["l2"]))
    promote_best()
    dataset = load_dataset("iris")
    if other == "fitted_on_other_rows":  # the very same kind of ColumnTransformer, other numbers
        preprocess = build_preprocessor(numeric=dataset.numeric_features, categorical=[])
        preprocess.fit(dataset.X.iloc[:40])
    elif other == "scaler_without_imputer":  # the same training rows: only a row with missing values tells
        preprocess = StandardScaler().fit(split_dataset(dataset, test_size=0.2, random_state=42).X_train)
    else:  # one that cannot even transform the model's columns
        preprocess = StandardScaler().fit(dataset.X.iloc[:, :3])
    _replace_scaler(results[0].run_id, preprocess, tmp_path)
    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    capsys.readouterr()
    assert import_main([]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"error: the scaler artifact (the preprocessing) of run {results[0].run_id} "
                   f"is not the one inside the model"]
    assert _store_snapshot(home) == before


def test_each_test_has_its_own_bentoml_home(tmp_path):
    from bentoml._internal.configuration.containers import BentoMLContainer

    assert Path(BentoMLContainer.model_store.get()._path) == tmp_path / "bentoml" / "models"


def test_an_alias_that_does_not_exist_is_exit_1_and_no_stage_fallback(trained_store, capsys):
    client = mlflow.MlflowClient()
    name = trained_store.registered_model_name
    client.transition_model_version_stage(name, _versions(client, name)[0], "Production")
    home = Path(os.environ["BENTOML_HOME"])
    before = _store_snapshot(home)
    assert import_main(["--alias", "nope"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["error: ClassificationModel has no alias @nope"]
    assert _store_snapshot(home) == before
