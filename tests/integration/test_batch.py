"""scripts/score.py on a real imported model: Parquet and CSV, --keep, --rejects, --jobs / --cluster, failures.

Every failure must be one line with its own exit code, and leave no output (nor temporary) file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import chunks
from batch.score import main as score_main
from tests.batch_support import import_wide_model, write_accounts
from tests.conftest import REPO_ROOT, use_bentoml_home

pytestmark = pytest.mark.integration

ROWS = 2_000
CHUNK = ["--chunk-rows", "300"]  # several chunks per row group (row groups of 500 rows)


@pytest.fixture(scope="module")
def model_home(tmp_path_factory) -> Path:
    return import_wide_model(tmp_path_factory.mktemp("batch-model"))


@pytest.fixture
def home(model_home, monkeypatch) -> Path:
    """This test sees the module's imported model (the autouse fixture gave it an empty home)."""
    return use_bentoml_home(monkeypatch, model_home)


@pytest.fixture
def dask_cluster():
    """A real Dask cluster on loopback: a scheduler and two single-threaded worker processes."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


def reference(frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities as /predict computes them: its records decoder, then the scoring core.

    One call per chunk of the job (300 rows within each row group of 500): BLAS adds a row's terms
    in an order that depends on the rows multiplied with it (tests/e2e/test_batch_vs_predict.py).
    """
    import bentoml

    from serving.core import Limits, Scorer
    from serving.model import load_model
    from serving.protocols.decode import records_to_table

    bento_model = bentoml.models.get("classification_model:latest")
    model = load_model(Path(bento_model.path), bento_model.info.metadata, tag=str(bento_model.tag))
    columns = frame[model.schema.feature_names]
    records = columns.astype(object).where(columns.notna(), None).to_dict("records")
    scorer = Scorer(model, limits=Limits(max_rows=len(records)))
    answers = [scorer.score(records_to_table(records[start:start + size], schema=model.schema, max_rows=300))
               for group in range(0, len(records), 500) for start, size in ((group, 300), (group + 300, 200))]
    predicted = np.concatenate([p for _, p in answers])
    return [model.class_names[i] for i in predicted], np.vstack([q for q, _ in answers])


def leftovers(folder: Path, *names: str) -> list[str]:
    """Files a job left in folder besides the given ones (temporary files start with '.')."""
    return sorted(p.name for p in folder.iterdir() if p.name not in names)


def test_parquet_and_csv_score_every_row_as_predict_does(home, tmp_path):
    frame = write_accounts(tmp_path / "in.parquet", rows=ROWS)
    write_accounts(tmp_path / "in.csv", rows=ROWS)
    assert score_main(["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "p.parquet"),
                       "--keep", "account_id", "age", *CHUNK]) == 0
    assert score_main(["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "c.parquet"),
                       "--keep", "account_id", *CHUNK]) == 0
    scored = pq.read_table(tmp_path / "p.parquet")
    assert scored.column_names == ["account_id", "age", "label", "probability_no", "probability_yes"]
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups == 8  # 500 rows: 300 + 200, 4 times
    labels, probabilities = reference(frame)
    assert scored.column("account_id").to_pylist() == frame["account_id"].tolist()
    assert scored.column("age").to_pylist() == frame["age"].tolist()
    assert scored.column("label").to_pylist() == labels
    assert np.array_equal(np.column_stack([scored.column("probability_no"), scored.column("probability_yes")]),
                          probabilities)
    from_csv = pq.read_table(tmp_path / "c.parquet")
    assert from_csv.column("account_id").to_pylist() == frame["account_id"].tolist()
    assert from_csv.drop(["account_id"]).equals(scored.drop(["account_id", "age"]))


def test_jobs_2_a_dask_cluster_and_any_threads_give_the_bytes_of_one_thread(home, tmp_path, dask_cluster):
    frame = write_accounts(tmp_path / "in.parquet", rows=ROWS)
    frame.loc[[10, 1_700], "age"] = [np.inf, 1e200]  # refused rows in the first and the last row group
    frame.to_parquet(tmp_path / "in.parquet", index=False, row_group_size=500)
    outputs = {}
    for name, extra in (("one", ["--threads", "1"]), ("threads", ["--threads", "3"]), ("jobs", ["--jobs", "2"]),
                        ("cluster", ["--cluster", dask_cluster.scheduler_address])):
        assert score_main(["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / f"{name}.parquet"),
                           "--rejects", str(tmp_path / f"{name}-rejects.parquet"), "--keep", "account_id",
                           *CHUNK, *extra]) == 0
        outputs[name] = ((tmp_path / f"{name}.parquet").read_bytes(), (tmp_path / f"{name}-rejects.parquet").read_bytes())
    assert outputs["threads"] == outputs["one"]  # 3 chunks at once, written in the file's order
    assert outputs["jobs"] == outputs["one"]
    assert outputs["cluster"] == outputs["one"]
    rejects = pq.read_table(tmp_path / "one-rejects.parquet")
    assert rejects.column("row").to_pylist() == [11, 1_701]
    assert pq.read_metadata(tmp_path / "one.parquet").num_rows == ROWS - 2
    assert leftovers(tmp_path, *(f"{n}.parquet" for n in outputs), *(f"{n}-rejects.parquet" for n in outputs),
                     "in.parquet") == []


def test_chunks_scored_at_once_are_written_in_the_files_order(home, tmp_path, monkeypatch):
    write_accounts(tmp_path / "in.parquet", rows=ROWS)
    arguments = ["--input", str(tmp_path / "in.parquet"), "--keep", "account_id", *CHUNK]
    assert score_main([*arguments, "--output", str(tmp_path / "one.parquet"), "--threads", "1"]) == 0
    score, finished = chunks._score_chunk, threading.Semaphore(0)

    def first_last(chunk, job, scorer, *, row):  # the first chunk waits until two later ones are done
        if row == 1:
            assert finished.acquire(timeout=60) and finished.acquire(timeout=60)
            return score(chunk, job, scorer, row=row)
        scored = score(chunk, job, scorer, row=row)
        finished.release()
        return scored

    monkeypatch.setattr(chunks, "_score_chunk", first_last)
    assert score_main([*arguments, "--output", str(tmp_path / "three.parquet"), "--threads", "3"]) == 0
    assert (tmp_path / "three.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()


def test_a_bad_row_stops_the_job_naming_row_and_column(home, tmp_path, capsys):
    frame = write_accounts(tmp_path / "in.csv", rows=ROWS)
    frame["tenure_months"] = frame["tenure_months"].astype(object)
    frame.loc[[1_234, 1_900], "tenure_months"] = ["twelve", "x"]  # the first named, though later chunks run at once
    frame.to_csv(tmp_path / "in.csv", index=False)
    for extra in (["--threads", "3"], ["--rejects", str(tmp_path / "rejects.csv")]):
        capsys.readouterr()
        code = score_main(["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet"),
                           *CHUNK, *extra])
        if "--rejects" not in extra:
            assert code == 5
            assert capsys.readouterr().out == "error: row 1235, column 'tenure_months': 'twelve' is not a number\n"
            assert leftovers(tmp_path, "in.csv") == []
    assert code == 0
    rejects = pd.read_csv(tmp_path / "rejects.csv")
    assert rejects[["row", "column", "reason"]].values.tolist() == [[1235, "tenure_months", "not a number"],
                                                                    [1901, "tenure_months", "not a number"]]
    assert rejects["tenure_months"].tolist() == ["twelve", "x"]
    assert pq.read_metadata(tmp_path / "out.parquet").num_rows == ROWS - 2


def test_a_text_column_in_a_number_column_and_a_number_in_a_text_column_are_refused(home, tmp_path, capsys):
    frame = write_accounts(tmp_path / "in.parquet", rows=50)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ages = pa.array([None] * 3 + [str(v) for v in frame["age"][3:]])  # a string column where numbers go
    table = table.set_column(table.schema.get_field_index("age"), "age", ages)
    pq.write_table(table, tmp_path / "ages.parquet")
    assert score_main(["--input", str(tmp_path / "ages.parquet"), "--output", str(tmp_path / "out.parquet")]) == 5
    assert capsys.readouterr().out.startswith("error: row 4, column 'age': ")
    plans = pa.array([None, 3, *([1] * 48)], pa.int64())  # numbers where text goes
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("plan"), "plan", plans)
    pq.write_table(table, tmp_path / "plans.parquet")
    assert score_main(["--input", str(tmp_path / "plans.parquet"), "--output", str(tmp_path / "out.parquet")]) == 5
    assert capsys.readouterr().out == "error: row 2, column 'plan': 3 is not text\n"
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(("argv", "code", "line"), [
    (["--model", "classification_model:nope"], 4, "error: no model 'classification_model:nope' in the BentoML store"),
    (["--keep", "no_such_column"], 3, "error: {input}: no column 'no_such_column'"),
    (["--output", "{tmp}/missing/out.parquet"], 7, "error: cannot write in {tmp}/missing"),
])
def test_usage_failures_are_one_line_with_their_exit_code(home, tmp_path, capsys, argv, code, line):
    write_accounts(tmp_path / "in.parquet", rows=20)
    given = {"input": str(tmp_path / "in.parquet"), "tmp": str(tmp_path)}
    full = ["--input", given["input"], "--output", str(tmp_path / "out.parquet"), *(a.format(**given) for a in argv)]
    assert score_main(full) == code
    out = capsys.readouterr().out
    assert out.startswith(line.format(**given)) and out.count("\n") == 1
    assert leftovers(tmp_path, "in.parquet") == []


def test_a_csv_is_not_split_across_jobs(home, tmp_path, capsys):
    write_accounts(tmp_path / "in.csv", rows=20)
    assert score_main(["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "o.parquet"), "--jobs", "2"]) == 8
    assert "convert it to Parquet" in capsys.readouterr().out


@contextlib.contextmanager
def held_job(tmp_path: Path, where: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, int]]:
    """score.py into tmp_path/out with its first task held on its worker: the process and that worker's pid."""
    write_accounts(tmp_path / "in.parquet", rows=ROWS)
    hold, out = tmp_path / "hold", tmp_path / "out"
    hold.mkdir()
    out.mkdir()
    process = subprocess.Popen([sys.executable, "scripts/score.py", "--input", str(tmp_path / "in.parquet"),
                                "--output", str(out / "scored.parquet"), *where, *CHUNK],
                               cwd=REPO_ROOT, env={**env, "BATCH_HOLD": str(hold)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(hold.glob("holding-*")):
            assert process.poll() is None and time.monotonic() < deadline, "the first task never started"
            time.sleep(0.1)
        yield process, int(next(hold.glob("holding-*")).name.removeprefix("holding-"))
    finally:
        (hold / "release").touch()
        if process.poll() is None:
            process.kill()


def assert_failed_in_one_line(process: subprocess.Popen, stdout: str, stderr: str, out: Path, line: str) -> None:
    """Exit 6, the last line starting with line, no traceback, nothing left in out."""
    assert process.returncode == 6, stdout + stderr
    assert stdout.strip().splitlines()[-1].startswith(line)
    assert "Traceback" not in stdout + stderr
    assert leftovers(out) == []


def test_a_worker_killed_mid_job_fails_it_in_one_line_without_output(home, tmp_path):
    with held_job(tmp_path, ["--jobs", "2"], dict(os.environ)) as (process, worker):
        os.kill(worker, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    assert_failed_in_one_line(process, stdout, stderr, tmp_path / "out", "error: the worker scoring rows 1-500 died")


def test_a_cluster_that_loses_its_only_worker_fails_the_job_in_one_line(home, tmp_path):
    """No worker left on a cluster (none to rerun on): the job fails at once, it does not wait for one."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    worker_env = {**env, "BATCH_HOLD": str(tmp_path / "hold")}  # the folder held_job makes
    with distributed.LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        # One worker without a nanny: killed, nothing starts it again.
        worker = subprocess.Popen([str(Path(sys.executable).parent / "dask"), "worker", cluster.scheduler_address,
                                   "--no-nanny", "--nthreads", "1", "--memory-limit", "0", "--host", "127.0.0.1",
                                   "--dashboard-address", "127.0.0.1:0"],
                                  cwd=REPO_ROOT, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with held_job(tmp_path, ["--cluster", cluster.scheduler_address], env) as (process, _):
                worker.kill()
                stdout, stderr = process.communicate(timeout=120)
        finally:
            worker.kill()
            worker.wait()
    assert_failed_in_one_line(process, stdout, stderr, tmp_path / "out",
                              "error: the Dask scheduler lost the part of rows from ")


def test_a_missing_model_column_or_an_unreadable_file_is_refused_in_one_line(home, tmp_path, capsys):
    write_accounts(tmp_path / "in.parquet", rows=20).drop(columns=["age"]).to_csv(tmp_path / "no-age.csv", index=False)
    assert score_main(["--input", str(tmp_path / "no-age.csv"), "--output", str(tmp_path / "o.parquet")]) == 3
    assert capsys.readouterr().out.startswith(f"error: {tmp_path / 'no-age.csv'}: no column 'age' (the model takes ")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    assert score_main(["--input", str(tmp_path / "garbage.parquet"), "--output", str(tmp_path / "o.parquet")]) == 3
    out = capsys.readouterr().out
    assert out.startswith(f"error: {tmp_path / 'garbage.parquet'}: cannot be read as parquet: ") and out.count("\n") == 1
    assert score_main(["--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "o.parquet")]) == 3
    assert capsys.readouterr().out == f"error: {tmp_path / 'in.txt'}: not a .parquet, .pq or .csv file\n"
    assert not (tmp_path / "o.parquet").exists()
