"""Fixtures shared by every kind of test: a private MLflow store and BentoML home per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.processes import free_port  # noqa: E402,F401 (tests import it from here too)
from serving.settings import get_settings as get_service_settings  # noqa: E402
from training.config import Settings, get_settings  # noqa: E402
from training.models import GridPoint, make_grid  # noqa: E402


def lr_grid(c_values: list[float], penalties: list[str]) -> list[GridPoint]:
    """A logistic-regression grid of these C values and penalties."""
    return make_grid(["logistic_regression"], {"C": tuple(c_values), "penalty": tuple(penalties)})


def use_store(monkeypatch: pytest.MonkeyPatch, directory: Path) -> Settings:
    """Point the settings (and so every command) at a SQLite store inside directory."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.delenv("REGISTERED_MODEL_NAME", raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    import mlflow

    # mlflow keeps process-wide URIs that outrank the environment: move it too.
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return settings


_MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def mlflow_uris_restored():
    """Inside: set mlflow's process-wide URIs at will; after: they are forgotten, as before.

    mlflow.set_tracking_uri/set_registry_uri (also called by every command's connect()) keep
    the URI in the process, where it outranks the environment, and write it into
    MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI for subprocesses; set_registry_uri(None) does not
    remove the latter. Both are put back as they were on entry.
    """
    from tests.servers import forget_mlflow_uris

    saved = {name: os.environ.get(name) for name in _MLFLOW_URI_VARIABLES}
    try:
        yield
    finally:
        forget_mlflow_uris()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def mlflow_uris(monkeypatch: pytest.MonkeyPatch):
    """For a test that sets mlflow's process-wide URIs: forget them when it ends.

    Depends on monkeypatch so that it ends first and monkeypatch then restores the environment.
    """
    with mlflow_uris_restored():
        yield


_BENTOML_MEMOS = ("bentoml_home", "result_store_file", "tmp_bento_store_dir", "bento_store_dir",
                  "model_store_dir", "env_store_dir", "bento_store", "model_store")


def use_bentoml_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point BentoML, in this process and in subprocesses, at a model store inside home."""
    from simple_di import sentinel

    from bentoml._internal.configuration.containers import BentoMLContainer

    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    # BentoML memoizes its home and stores once per process; forget them so this one is used.
    for name in _BENTOML_MEMOS:
        getattr(BentoMLContainer, name)._cache = sentinel
    return home


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No test sees another's settings, MLflow store or BentoML home."""
    use_bentoml_home(monkeypatch, tmp_path / "bentoml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused-mlflow.db'}")
    get_settings.cache_clear()
    get_service_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_service_settings.cache_clear()


@pytest.fixture
def mlflow_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_uris) -> Settings:
    """An empty SQLite MLflow store of this test's own."""
    return use_store(monkeypatch, tmp_path / "store")


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the default 6-run iris sweep, trained once per session; copy, don't use."""
    directory = tmp_path_factory.mktemp("trained-template")
    with pytest.MonkeyPatch.context() as monkeypatch, mlflow_uris_restored():
        use_store(monkeypatch, directory)
        from training.sweep import run_experiments

        run_experiments(dataset_name="iris")
    get_settings.cache_clear()
    return directory


@pytest.fixture
def trained_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_template: Path,
                  mlflow_uris) -> Settings:
    """This test's own copy of the trained store (artifacts stay read-only in the template)."""
    directory = tmp_path / "store"
    directory.mkdir()
    shutil.copy(trained_template / "mlflow.db", directory / "mlflow.db")
    return use_store(monkeypatch, directory)


# Test classes that CI must run: `REQUIRE=containers,postgres` turns a skip of any of their
# tests into a failure (with the skip's reason), and a run that collects none of them into an
# error. On a user's machine, without REQUIRE, they skip with the reason.
REQUIRABLE = {
    "containers": lambda item: item.get_closest_marker("container") is not None,
    "postgres": lambda item: item.module.__name__.endswith("test_postgres"),
    "nginx": lambda item: item.module.__name__.rpartition(".")[2] in ("test_failover", "test_rollout"),
    "browser": lambda item: item.module.__name__.endswith("test_swagger_page"),
    # Tests that run Debian's promtool or prometheus binaries (the fixtures skip without them).
    "prometheus": lambda item: bool({"promtool", "prometheus"} & set(getattr(item, "fixturenames", ()))),
    "s3": lambda item: item.module.__name__.rpartition(".")[2].startswith("test_s3"),
}


def required_classes() -> list[str]:
    """The classes named in $REQUIRE; an unknown name is a usage error."""
    names = [name.strip() for name in os.environ.get("REQUIRE", "").split(",") if name.strip()]
    unknown = sorted(set(names) - set(REQUIRABLE))
    if unknown:
        raise pytest.UsageError(f"REQUIRE names unknown test classes {unknown}; known: {sorted(REQUIRABLE)}")
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for name in required_classes():
        if not any(REQUIRABLE[name](item) for item in items):
            raise pytest.UsageError(f"REQUIRE={name}, but no test of that class was collected")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    for name in required_classes():
        if REQUIRABLE[name](item):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"REQUIRE={name}: this test must run here, but it was skipped: {reason}"
            return
