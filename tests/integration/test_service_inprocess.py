"""The service class in-process, as BentoML's testing guide uses it, and composed with bentoml.depends."""

from __future__ import annotations

import asyncio
import importlib
import sys

import bentoml
import pytest

from serving.settings import get_settings
from release.importer import import_production
from training.promote import promote_best

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def service_module(trained_store, monkeypatch):
    """service.py imported against this test's store, serving the freshly imported model."""
    promote_best()
    tag = import_production().tag
    monkeypatch.setenv("BENTO_MODEL_TAG", tag)
    get_settings.cache_clear()
    # service.py reads the model tag when it is imported: import it anew for this store.
    sys.modules.pop("service", None)
    module = importlib.import_module("service")
    yield module
    sys.modules.pop("service", None)


def test_predict_in_process_returns_the_typed_answer(service_module):
    service = service_module.ClassificationService()
    answer = asyncio.run(service.predict(features=[ROW]))
    assert answer.predictions[0].label == "setosa"
    assert sum(answer.predictions[0].probabilities.values()) == pytest.approx(1.0)
    by_name = asyncio.run(service.predict(records=[dict(zip(
        ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"], ROW))]))
    assert by_name == answer


def test_bad_input_in_process_raises_the_contract_error(service_module):
    from serving.errors import RequestError

    service = service_module.ClassificationService()
    with pytest.raises(RequestError, match="takes 4 features"):
        asyncio.run(service.predict(features=[[1.0, 2.0]]))


def test_another_service_can_depend_on_it(service_module):
    @bentoml.service
    class Gateway:
        classifier = bentoml.depends(service_module.ClassificationService)

        @bentoml.api
        async def label(self, row: list[float]) -> str:
            answer = await self.classifier.predict(features=[row])
            return answer.predictions[0].label

    assert asyncio.run(Gateway().label(row=ROW)) == "setosa"


def test_openapi_document_is_versioned_by_the_served_model(service_module):
    info = service_module.ClassificationService.openapi_spec.asdict()["info"]
    assert info["version"] == bentoml.models.get(get_settings().bento_model_tag).tag.version
    assert info["version"].startswith("v") and "contact" not in info
