"""The shadow in-process: a failing challenger changes no answer, a full queue drops and counts, the figures add up."""

from __future__ import annotations

import asyncio
import itertools
import threading

import httpx
import numpy as np
import prometheus_client
import pytest

from serving.core import Limits
from serving.http import ServingApp
from serving.model import load_model
from serving.schema import Row
from serving.shadow import Shadow, incompatibility, load_shadow
from tests.unit.conftest import linear_predictor, numeric_schema, save_model_folder

pytestmark = pytest.mark.unit

LIMITS = Limits(max_rows=10, max_body_bytes=10_000, request_timeout=5)
_tags = itertools.count()


def _value(name: str, tag: str, **labels: str) -> float:
    """A sample of this process's registry (0 when absent): the series are process-wide, labelled by tag."""
    return prometheus_client.REGISTRY.get_sample_value(name, {"challenger": tag, **labels}) or 0.0


def _model(directory, coef, *, classes=("no", "yes"), version="1"):
    predictor = linear_predictor(coef)
    metadata = save_model_folder(directory, predictor, schema=numeric_schema(["x", "y"], list(classes)),
                                 version=version)
    return load_model(directory, metadata, tag=f"m:v{version}")


@pytest.fixture
def production(tmp_path):
    return _model(tmp_path / "production", [[1.0, -1.0]], version="1")  # x - y > 0: yes


@pytest.fixture
def challenger(tmp_path):
    return _model(tmp_path / "challenger", [[1.0, 0.0]], version="2")  # x > 0: yes


def _unique_tag() -> str:
    return f"challenger:t{next(_tags)}"


# Requests of every protocol, accepted and refused, with the statuses they get.
REQUESTS = [
    ("/predict", {"features": [[3.0, 1.0]]}),  # the one-row lane
    ("/predict", {"features": [[3.0, 1.0], [-1.0, 2.0], [1.0, 5.0]]}),
    ("/predict", {"records": [{"x": 1.0, "y": None}]}),
    ("/invocations", {"dataframe_split": {"columns": ["x", "y"], "data": [[1.0, 2.0], [2.0, 1.0]]}}),
    ("/v2/models/M/infer", {"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64",
                                       "data": [1.0, 2.0, -3.0, -4.0]}]}),
    ("/predict", {"features": [[1.0]]}),  # refused: 422
    ("/invocations", {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}),  # refused: 400
]


def _answers(app: ServingApp) -> list[tuple[int, bytes]]:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post(path, json=body) for path, body in REQUESTS]
    return [(response.status_code, response.content) for response in asyncio.run(go())]


def test_a_challenger_that_raises_on_every_row_changes_no_answer_and_no_status(production, challenger):
    def broken(*rows):
        raise RuntimeError("the challenger's bug")

    # A challenger with a bug: its (frozen) predictor raises for tables and for the one-row lane.
    object.__setattr__(challenger.predictor, "predict_proba", broken)
    object.__setattr__(challenger.predictor, "predict_row", broken)
    tag = _unique_tag()
    shadow = Shadow(tag, challenger=challenger, limits=LIMITS)
    alone, shadowed = ServingApp(), ServingApp()
    alone.bind(production, limits=LIMITS, api_key=None)
    shadowed.bind(production, limits=LIMITS, api_key=None, shadow=shadow)
    shadow.start()
    try:
        expected = _answers(alone)
        assert [status for status, _ in expected] == [200, 200, 200, 200, 200, 422, 400]
        assert _answers(shadowed) == expected
        assert _answers(shadowed) == expected  # with the thread's failures of the first pass behind it
    finally:
        shadow.stop()
    shadow.drain()
    assert _value("shadow_errors_total", tag) == 10  # 5 accepted requests, twice
    assert _value("shadow_rows_total", tag) == 0


def test_a_full_queue_drops_and_counts_and_the_rest_is_scored(production, challenger):
    release, scoring = threading.Event(), threading.Event()
    predict_row = challenger.predictor.predict_row

    def stalled(*row):
        scoring.set()
        release.wait()  # the challenger falls behind until the test lets it go
        return predict_row(*row)

    object.__setattr__(challenger.predictor, "predict_row", stalled)
    tag = _unique_tag()
    shadow = Shadow(tag, challenger=challenger, limits=LIMITS, queue_size=3)
    app = ServingApp()
    app.bind(production, limits=LIMITS, api_key=None, shadow=shadow)
    shadow.start()
    try:
        scorer = app.native.scorer
        scorer.score_row(Row([1.0, 2.0]))  # taken by the thread, which stalls on it
        assert scoring.wait(timeout=30)
        for _ in range(5):  # 3 wait in the queue, 2 find it full
            scorer.score_row(Row([1.0, 2.0]))
        assert _value("shadow_dropped_requests_total", tag) == 2
    finally:
        release.set()
        shadow.stop()
    shadow.drain()
    assert _value("shadow_rows_total", tag) == 4
    assert _value("shadow_dropped_requests_total", tag) == 2


def test_the_series_add_up_to_the_comparison_of_the_two_models(production, challenger):
    tag = _unique_tag()
    shadow = Shadow(tag, challenger=challenger, limits=LIMITS)
    app = ServingApp()
    app.bind(production, limits=LIMITS, api_key=None, shadow=shadow)
    rows = np.random.default_rng(0).normal(size=(40, 2))
    scorer = app.native.scorer
    scorer.score_row(Row(rows[0].tolist()))
    from serving.schema import Table

    scorer.score(Table.from_numbers(rows[1:]))
    shadow.drain()
    mine = production.predictor.predict_proba(Table.from_numbers(rows))
    theirs = challenger.predictor.predict_proba(Table.from_numbers(rows))
    assert _value("shadow_rows_total", tag) == 40
    assert _value("shadow_label_agreements_total", tag) == (mine.argmax(1) == theirs.argmax(1)).sum()
    assert 0 < _value("shadow_label_agreements_total", tag) < 40
    assert _value("shadow_probability_difference_sum", tag) == pytest.approx(np.abs(mine - theirs).mean(1).sum())
    assert _value("shadow_latency_seconds_count", tag) == 2
    for index, label in enumerate(["no", "yes"]):
        assert _value("shadow_predictions_total", tag, label=label) == (theirs.argmax(1) == index).sum()


def test_metadata_names_the_challenger(production, challenger):
    shadow = Shadow(_unique_tag(), challenger=challenger, limits=LIMITS)
    app = ServingApp()
    app.bind(production, limits=LIMITS, api_key=None, shadow=shadow)
    status, body = app.native.metadata(None)
    import json

    named = json.loads(body)["shadow"]
    assert status == 200 and named["status"] == "scoring" and named["version"] == "2"
    assert named["bento_tag"] == shadow.tag


def test_a_challenger_with_other_classes_or_columns_is_refused(tmp_path, production):
    classes = _model(tmp_path / "classes", [[1.0, 0.0]], classes=("a", "b"))
    assert "classes" in incompatibility(production, classes)
    columns = load_model(*_folder(tmp_path / "columns"), tag="m:v9")
    assert "columns" in incompatibility(production, columns)


def _folder(directory):
    metadata = save_model_folder(directory, linear_predictor([[1.0, 0.0]]),
                                 schema=numeric_schema(["x", "z"], ["no", "yes"]), version="9")
    return directory, metadata


def test_a_challenger_that_does_not_load_leaves_production_answering(production):
    shadow = load_shadow("classification_model:nosuch", production=production, limits=LIMITS, queue_size=5)
    assert not shadow.active and shadow.describe()["status"] == "not scoring"
    assert "nosuch" in shadow.describe()["error"]
    app = ServingApp()
    app.bind(production, limits=LIMITS, api_key=None, shadow=shadow)
    assert _answers(app)[0][0] == 200


def _load(p99_ms: float, rps: float) -> dict:
    return {"rows": 1, "concurrency": 8, "rps": rps, "rows_per_s": rps, "p50_ms": 0.5, "p99_ms": p99_ms,
            "p99_worst_ms": p99_ms, "errors": 0, "requests": 100}


def test_the_bench_prints_shadow_on_and_off_side_by_side_and_its_goal():
    from bench.rounds import Load
    from bench.run import check_targets, format_report

    summary = {name: {"cold_start_s": 1.0, "rss_mb": 200.0, "loads": {"c=8": _load(p99, rps)}}
               for name, p99, rps in (("ours", 2.0, 9000.0), ("shadow", 2.6, 8000.0))}
    targets = check_targets(summary, batch=Load(1000, 8))
    goal = next(item for item in targets if "shadow on" in item["target"])
    assert goal["goal"] and goal["values"] == [pytest.approx(1.3)] and goal["passed"] is False
    training = {"runs": 6, "train_runs_s": 1.0, "train_command_s": 2.0, "promote_s": 1.0, "import_s": 1.0}
    report = format_report(summary, targets, training, shadow={"rows": 5000, "dropped": 3, "errors": 0})
    assert ("shadow at c=8: p99 2.60 ms on, 2.00 ms off (1.30x); req/s 8000 on, 9000 off (0.89x); "
            "the challenger scored 5000 rows, dropped 3 requests, failed 0") in report


def test_one_record_requests_of_a_model_with_text_reach_the_challenger():
    """One record a request (a Row with texts, the one-row lane) goes to the challenger like a
    table: here the same model in another form, so every label agrees."""
    from serving.forms import convert
    from serving.model import LoadedModel
    from tests.unit.conftest import table_from_frame
    from tests.unit.test_forms import case

    pipeline, schema, probe = case("mixed", "logistic_regression")

    def loaded(form: str, version: str) -> LoadedModel:
        summary = {"name": "m", "version": version}
        info = {**summary, "run_id": version, "served_form": form, "metrics": {}}
        return LoadedModel(predictor=convert(form, pipeline, schema), schema=schema, info=info, summary=summary)

    tag = _unique_tag()
    shadow = Shadow(tag, challenger=loaded("sklearn", "2"), limits=LIMITS)
    app = ServingApp()
    app.bind(loaded("linear", "1"), limits=LIMITS, api_key=None, shadow=shadow)
    table = table_from_frame(probe, schema)  # unseen and missing text among the rows
    for i in range(5):
        app.native.scorer.score_row(Row(table.numeric[i].tolist(), tuple(table.categorical[i].tolist())))
    assert shadow.drain() == 5
    assert _value("shadow_rows_total", tag) == 5
    assert _value("shadow_label_agreements_total", tag) == 5
    assert _value("shadow_probability_difference_sum", tag) < 1e-9  # each row's own texts, in order
    assert _value("shadow_errors_total", tag) == 0
