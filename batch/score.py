"""Score a Parquet or CSV file with the served form in the Bento store: the command and score_file()."""

# The output appears whole or not at all: everything is written to temporary files in the
# output's folder and renamed over the output (and the rejects file) only once every row is done.

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch.chunks import (
    DEFAULT_CHUNK_ROWS,
    Job,
    find_model,
    open_model,
    reject_schema,
    score_chunks,
)
from batch.errors import ClusterUnavailable, OutputNotWritable
from batch.parallel import Cluster, merge_parts, plan_parts, run_parts
from batch.tables import (
    check_columns,
    input_schema,
    open_input,
    open_writer,
    output_schema,
)
from serving.settings import get_settings, usable_cores
from training.cli import configure_logging, run_command

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """What a job did: rows read, scored and refused, and the model it used."""

    rows: int
    scored: int
    refused: int
    model_tag: str


def score_file(input_path: Path, output_path: Path, *, model_tag: str | None = None,
               keep: list[str] | tuple[str, ...] = (), jobs: int = 1, cluster: str | None = None, rejects_path: Path | None = None,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: bool = False, threads: int | None = None) -> Summary:
    """Score every row of input_path into output_path (Parquet); refused rows into rejects_path, else fatal."""
    source = open_input(Path(input_path))
    files = find_model(model_tag or get_settings().bento_model_tag)
    parallel = cluster is not None or jobs > 1
    # Chunks scored at once: one per worker when workers split the file, else one per core this
    # process may use. Each chunk's model call takes one thread (no slices of rows).
    model = open_model(files)
    threads = 1 if parallel else threads or usable_cores()
    keep = list(dict.fromkeys(keep))
    columns = check_columns(source, model.schema, keep)
    read = input_schema(source, columns)
    job = Job(source=source, columns=columns, keep=keep, chunk_rows=chunk_rows, model=files,
              schema=output_schema(read, keep, model.class_names),
              rejects=reject_schema(read, columns) if rejects_path is not None else None)
    if parallel and source.kind != "parquet":
        raise ClusterUnavailable(f"{source.path}: --jobs and --cluster split Parquet files by row group; "
                                 "score a CSV with one process, or convert it to Parquet first")
    total = sum(source.row_groups) if source.kind == "parquet" else None
    with temporary_file(Path(output_path)) as output, progress_bar(progress, total) as advance:
        if parallel:
            with temporary_folder(Path(output_path)) as folder, Cluster(jobs=jobs, address=cluster) as client:
                tasks = plan_parts(source.row_groups, folder)
                rejected = [t for part in run_parts(client, tasks, job, on_part=advance) for t in part]
                with open_writer(output, job.schema) as writer:
                    merge_parts(tasks, writer)
        else:
            with open_writer(output, job.schema) as writer:
                rejected = score_chunks(job, model, writer, first_row=1, threads=threads, on_chunk=advance)
        rows = pq.ParquetFile(output).metadata.num_rows
        refused = sum(t.num_rows for t in rejected)
        if rejects_path is not None:
            write_rejects(Path(rejects_path), rejected, job.rejects)
        os.replace(output, output_path)
    return Summary(rows=rows + refused, scored=rows, refused=refused, model_tag=files.tag)


def write_rejects(path: Path, tables: list[pa.Table], schema: pa.Schema) -> None:
    """The refused rows, Parquet or CSV by the file's suffix, written whole or not at all."""
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    with temporary_file(path) as temporary:
        if path.suffix.lower() == ".csv":
            pacsv.write_csv(table, temporary)
        else:
            pq.write_table(table, temporary)
        os.replace(temporary, path)


@contextlib.contextmanager
def temporary_file(path: Path) -> Iterator[Path]:
    """A fresh file beside path (same file system: os.replace is atomic), removed unless renamed."""
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputNotWritable(f"cannot write in {path.parent}: {error.strerror or error}") from None
    os.close(handle)
    os.chmod(name, 0o666 & ~current_umask())  # mkstemp's 0600 is for secrets; the output is a plain file
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def current_umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def temporary_folder(path: Path) -> Iterator[Path]:
    """A folder beside path for the workers' part files, removed at the end whatever happens."""
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.parts-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def progress_bar(shown: bool, total: int | None) -> Iterator[Callable[[int], None]]:
    """advance(rows): a rich progress bar with rows/s on stderr when shown, else nothing."""
    if not shown:
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               TextColumn("{task.fields[speed]}"), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("scoring", total=total, speed="")

        def advance(rows: int) -> None:
            bar.advance(task, rows)
            elapsed = bar.tasks[0].elapsed or 0.0
            done = bar.tasks[0].completed
            bar.update(task, speed=f"{done / elapsed:,.0f} rows/s" if elapsed > 0 else "")

        yield advance


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="score.py", description="Score a Parquet or CSV file with the imported model (the served form /predict uses).")
    parser.add_argument("--input", type=Path, required=True, help="FILE.parquet or FILE.csv")
    parser.add_argument("--output", type=Path, required=True, help="FILE.parquet: kept columns, label, probability_<class>")
    parser.add_argument("--model", metavar="BENTO_TAG", help="default: $BENTO_MODEL_TAG or classification_model:latest")
    parser.add_argument("--keep", nargs="+", default=[], metavar="COL", help="input columns copied to the output")
    parser.add_argument("--rejects", type=Path, metavar="FILE",
                        help="write refused rows here (.csv or .parquet) with their reasons and score the rest; "
                             "without it the first refused row stops the job")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=1, metavar="N", help="local worker processes (Parquet input)")
    where.add_argument("--cluster", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per chunk and output row group")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="with one job: chunks scored at once, each on a thread (default: every core); "
                             "workers of --jobs / --cluster use one each")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command: exit 0, or one line and the failure's exit code (batch.errors)."""
    args = build_parser().parse_args(argv)
    if args.jobs < 1 or args.chunk_rows < 1 or (args.threads is not None and args.threads < 1):
        build_parser().error("--jobs, --chunk-rows and --threads must be at least 1")
    if args.rejects is not None and args.rejects.resolve() == args.output.resolve():
        build_parser().error("--rejects and --output must be different files")
    configure_logging()

    def work() -> int:
        summary = score_file(args.input, args.output, model_tag=args.model, keep=args.keep, jobs=args.jobs,
                             cluster=args.cluster, rejects_path=args.rejects, chunk_rows=args.chunk_rows,
                             progress=sys.stderr.isatty(), threads=args.threads)
        refused = f", {summary.refused} refused (see {args.rejects})" if args.rejects is not None else ""
        logger.info("scored %d rows with %s into %s%s", summary.scored, summary.model_tag, args.output, refused)
        return 0

    return run_command(work, failure="batch scoring failed")
