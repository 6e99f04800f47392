"""One PNG page comparing the runs of the latest sweep, written locally and logged to MLflow.

    python -m training.report [--output reports/sweep_report.png] [--metric f1]
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from training.cli import CommandError, configure_logging, run_command
from training.config import METRICS, PROJECT_ROOT, Settings, get_settings
from training.tracking import connect

logger = logging.getLogger(__name__)

REPORT_ARTIFACT = "sweep_report.png"


class ReportError(CommandError):
    """There is no sweep to report on."""


def latest_sweep(client, *, experiment_id: str):
    """The newest parent run of `python -m training.experiments`."""
    runs = client.search_runs([experiment_id], "tags.kind = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportError("no sweep found: run `python -m training.experiments` first")
    return runs[0]


def sweep_children(client, *, experiment_id: str, parent_id: str) -> list:
    """The sweep's child runs, in the order they ran."""
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return sorted(children, key=lambda r: r.info.start_time)


def draw_report(children: list, confusion_pngs: list[Path], *, metric: str, title: str) -> Figure:
    """Each metric per run on top (one colour per model family), every run's confusion matrix below."""
    columns = 3
    matrix_rows = math.ceil(len(children) / columns)
    fig = plt.figure(figsize=(4 * columns, 3.6 + 3.4 * matrix_rows))
    grid = fig.add_gridspec(1 + matrix_rows, columns, height_ratios=[1.1] + [1] * matrix_rows)
    for column, name in enumerate((metric, *[m for m in METRICS if m != metric][:columns - 1])):
        ax = fig.add_subplot(grid[0, column])
        families = list(dict.fromkeys(r.data.params.get("model", "?") for r in children))
        ax.barh(range(len(children)), [r.data.metrics[name] for r in children],
                color=[f"C{families.index(r.data.params.get('model', '?'))}" for r in children])
        ax.set_yticks(range(len(children)), [_short_name(r) for r in children], fontsize=6)
        ax.invert_yaxis()
        ax.set_title(name)
        ax.grid(alpha=0.3, axis="x")
    for index, (run, png) in enumerate(zip(children, confusion_pngs)):
        ax = fig.add_subplot(grid[1 + index // columns, index % columns])
        ax.imshow(mpimg.imread(png))
        ax.axis("off")
        ax.set_title(f"{_short_name(run)}  {metric}={run.data.metrics[metric]:.4f}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short_name(run) -> str:
    """The run's name without its dataset prefix: `random_forest-n_estimators100-max_depth8`."""
    name = run.info.run_name or run.info.run_id
    dataset = run.data.params.get("dataset_name", "")
    return name.removeprefix(f"{dataset}-") if dataset else name


def write_report(*, output: Path, metric: str = "f1", settings: Settings | None = None) -> Path:
    """Draw the latest sweep's comparison page, save it to output and log it on the sweep run."""
    import mlflow

    settings = settings or get_settings()
    connect(settings)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        raise ReportError(f"no experiment {settings.experiment_name!r}: run `python -m training.experiments` first")
    parent = latest_sweep(client, experiment_id=experiment.experiment_id)
    children = sweep_children(client, experiment_id=experiment.experiment_id,
                              parent_id=parent.info.run_id)
    if not children:
        raise ReportError(f"the latest sweep {parent.info.run_id} has no finished runs")
    with tempfile.TemporaryDirectory() as tmp:
        pngs = [Path(mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="confusion_matrix.png", dst_path=f"{tmp}/{i}"))
            for i, run in enumerate(children)]
        figure = draw_report(children, pngs, metric=metric,
                             title=f"{parent.info.run_name}: {len(children)} runs ({parent.info.run_id[:8]})")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)
    plt.close(figure)
    client.log_artifact(parent.info.run_id, str(output), artifact_path="report")
    return output


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m training.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "reports" / REPORT_ARTIFACT)
    parser.add_argument("--metric", choices=METRICS, default="f1")
    args = parser.parse_args(argv)
    configure_logging()
    return run_command(lambda: logger.info("wrote %s and logged it to the sweep run",
                                           write_report(output=args.output, metric=args.metric)),
                       failure="report failed")


if __name__ == "__main__":
    raise SystemExit(main())
