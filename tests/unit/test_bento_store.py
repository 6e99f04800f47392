"""Pins every private BentoML API release/bento_store.py uses: an upgrade that changes one fails here, by name."""

from __future__ import annotations

import inspect
from pathlib import Path

import bentoml
import pytest

from release import bento_store

pytestmark = pytest.mark.unit


def _model_store_dir_is_the_homes_models_folder(home: Path) -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer

    assert Path(BentoMLContainer.model_store_dir.get()) == home / "models"


def _model_store_takes_its_folder(home: Path) -> None:
    from bentoml._internal.models import ModelStore

    assert list(inspect.signature(ModelStore).parameters) == ["base_path"]
    (home / "elsewhere").mkdir(parents=True)
    assert ModelStore(home / "elsewhere").list() == []  # an empty folder is an empty store


def _models_create_takes_a_model_store(home: Path) -> None:
    assert "_model_store" in inspect.signature(bentoml.models.create).parameters


def _tag_paths_are_name_version_and_name_latest(home: Path) -> None:
    tag = bentoml.Tag.from_taglike("m:v1")
    assert (tag.path(), tag.latest_path()) == (str(Path("m", "v1")), str(Path("m", "latest")))


PRIVATE_APIS = {
    "BentoMLContainer.model_store_dir": _model_store_dir_is_the_homes_models_folder,
    "ModelStore(base_path)": _model_store_takes_its_folder,
    "bentoml.models.create(_model_store=)": _models_create_takes_a_model_store,
    "Tag.path() and Tag.latest_path()": _tag_paths_are_name_version_and_name_latest,
}


@pytest.mark.parametrize("api", PRIVATE_APIS)
def test_the_private_bentoml_api_is_as_bento_store_expects(api, tmp_path):
    try:
        PRIVATE_APIS[api](tmp_path / "bentoml")
    except Exception as error:  # noqa: BLE001 - any change at all must name the API
        pytest.fail(f"BentoML changed {api}, which release/bento_store.py relies on: {error!r}")


def _publish(tag: str, tmp_path: Path) -> None:
    source = tmp_path / "source" / tag.replace(":", "-")
    source.mkdir(parents=True)
    (source / "weights.txt").write_text(tag)
    bento_store.publish(tag, source=source, labels={"l": "1"}, metadata={"m": 1},
                        store_root=bento_store.model_store_path())


def test_a_published_model_is_what_bentoml_finds_as_latest_and_latest_can_point_back(tmp_path):
    """The store layout the rename and `latest` write assume: BentoML's own get() reads them."""
    _publish("m:v1", tmp_path)
    _publish("m:v2", tmp_path)
    latest = bentoml.models.get("m:latest")
    assert str(latest.tag) == "m:v2" and latest.info.labels == {"l": "1"} and latest.info.metadata == {"m": 1}
    assert (Path(latest.path) / "weights.txt").read_text() == "m:v2"
    bento_store.point_latest(bento_store.model_store_path(), "m:v1")  # a rollback to the older one
    assert str(bentoml.models.get("m:latest").tag) == "m:v1"
    assert [str(m.tag) for m in bentoml.models.list("m")] == ["m:v1", "m:v2"]
    assert list(bento_store.model_store_path().parent.glob(f"{bento_store.STAGING_PREFIX}*")) == []


def test_find_in_store_reads_the_store_as_bentoml_does(tmp_path):
    """serving.layout.find_in_store (batch scoring's lookup, without importing bentoml.models) = bentoml.models.get."""
    from serving.layout import NotInStore, find_in_store

    metadata = {"version": "1", "metrics": {"f1": 0.75, "n": 3}, "features": ["a", "b"], "flag": True,
                "schema": {"columns": [{"name": "x", "type": "double"}]}}
    for tag in ("m:v1", "m:v2"):
        source = tmp_path / "source" / tag.replace(":", "-")
        source.mkdir(parents=True)
        bento_store.publish(tag, source=source, labels={"l": "1"}, metadata={**metadata, "tag": tag},
                            store_root=bento_store.model_store_path())
    bento_store.point_latest(bento_store.model_store_path(), "m:v1")
    for tag in ("m", "m:latest", "m:v2", "M:V2"):
        stored = bentoml.models.get(tag)
        assert find_in_store(tag) == (Path(stored.path), stored.info.metadata, str(stored.tag))
    assert find_in_store("m")[2] == "m:v1"
    for tag in ("m:v3", "nope", "../m:v1", "m:../../v1", "m:"):
        with pytest.raises(NotInStore, match="BentoML"):
            find_in_store(tag)
