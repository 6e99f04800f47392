"""One PNG of the dashboard's panels over the last minutes, from Prometheus' range queries.

    python -m monitor.picture [--prometheus http://127.0.0.1:9090] [--minutes 30] [--output monitoring.png]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from training.cli import CommandError, configure_logging, run_command

logger = logging.getLogger(__name__)

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "classifier.json"
RATE_INTERVAL = "$__rate_interval"  # Grafana's variable, replaced by a window of ours here
POINTS = 120  # points per series across the picture
# Grafana's unit names, as axis labels.
UNITS = {"reqps": "per second", "s": "seconds", "percentunit": "share", "none": "", "short": ""}


@dataclass(frozen=True)
class Panel:
    """One dashboard panel: its title, unit, queries (expression, legend template) and threshold lines."""

    title: str
    unit: str
    queries: list[tuple[str, str]]
    thresholds: list[float]


@dataclass(frozen=True)
class Series:
    """One line of a panel: its legend, times (Unix seconds) and values."""

    legend: str
    times: list[float]
    values: list[float]


def dashboard_panels(path: Path = DASHBOARD) -> list[Panel]:
    """The panels of the shipped Grafana dashboard, in its order."""
    dashboard = json.loads(path.read_text())
    panels = []
    for panel in dashboard["panels"]:
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        steps = defaults.get("thresholds", {}).get("steps", [])
        panels.append(Panel(title=panel["title"], unit=defaults.get("unit", ""),
                            queries=[(t["expr"], t.get("legendFormat", "")) for t in panel["targets"]],
                            thresholds=[s["value"] for s in steps if s.get("value") is not None]))
    return panels


def with_window(expr: str, window: str) -> str:
    """expr with Grafana's $__rate_interval replaced by window (e.g. "1m")."""
    return expr.replace(RATE_INTERVAL, window)


def legend_of(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend template ("{{feature}}") filled with a series' labels."""
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text or ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def prometheus_get(base_url: str, path: str, params: dict[str, str], *, timeout: float = 30) -> dict:
    """GET base_url/path?params from Prometheus' HTTP API; its `data`, or a CommandError."""
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:  # Prometheus says why in its JSON body
        try:
            answer = json.load(error)
        except ValueError:
            raise CommandError(f"{base_url} answered {error.code} to {path}: not Prometheus?") from None
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot query Prometheus at {base_url}: {error}") from None
    if answer.get("status") != "success":
        raise CommandError(f"Prometheus refused {params.get('query', path)!r}: {answer.get('error')}")
    return answer["data"]


def query_range(base_url: str, expr: str, *, start: float, end: float, step: float) -> list[tuple[dict, list, list]]:
    """(labels, times, values) of every series expr returns between start and end."""
    data = prometheus_get(base_url, "/api/v1/query_range",
                          {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    return [(result["metric"], [float(t) for t, _ in result["values"]], [float(v) for _, v in result["values"]])
            for result in data["result"]]


def panel_series(base_url: str, panel: Panel, *, start: float, end: float, step: float, window: str) -> list[Series]:
    """The lines of one panel over [start, end]."""
    lines = []
    for expr, template in panel.queries:
        for labels, times, values in query_range(base_url, with_window(expr, window), start=start, end=end, step=step):
            lines.append(Series(legend_of(template, labels), times, values))
    return lines


def draw(panels: list[tuple[Panel, list[Series]]], *, title: str):
    """A figure of the panels in two columns, thresholds as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = math.ceil(len(panels) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, panels):
        for line in lines:
            ax.plot([datetime.fromtimestamp(t, UTC) for t in line.times], line.values,
                    label=line.legend, linewidth=1.2)
        highest = max((max(line.values, default=0.0) for line in lines), default=0.0)
        if panel.thresholds and highest > 10 * max(panel.thresholds):
            # Linear up to the lowest threshold, logarithmic above: a PSI of 5 leaves 0.1 and 0.25 readable.
            ax.set_yscale("symlog", linthresh=min(panel.thresholds))
        for value in panel.thresholds:
            ax.axhline(value, color="red" if value == max(panel.thresholds) else "orange",
                       linestyle="--", linewidth=1)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(UNITS.get(panel.unit, panel.unit), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def render(base_url: str, *, output: Path, minutes: float = 30, window: str = "1m",
           end: float | None = None) -> dict[str, int]:
    """Draw every dashboard panel over the last minutes into output (PNG); the number of lines per panel."""
    end = time.time() if end is None else end
    start = end - minutes * 60
    step = max(minutes * 60 / POINTS, 1.0)
    drawn = [(panel, panel_series(base_url, panel, start=start, end=end, step=step, window=window))
             for panel in dashboard_panels()]
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    figure = draw(drawn, title=f"Classifier service: last {minutes:g} minutes to {stamp} ({base_url})")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)
    return {panel.title: len(lines) for panel, lines in drawn}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m monitor.picture", description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus' URL (default %(default)s)")
    parser.add_argument("--minutes", type=float, default=30, help="how far back (default %(default)s)")
    parser.add_argument("--window", default="1m", help="the rate window, Grafana's $__rate_interval (default %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("monitoring.png"), help="the PNG (default %(default)s)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()

    def work() -> None:
        counts = render(args.prometheus, output=args.output, minutes=args.minutes, window=args.window)
        empty = [title for title, count in counts.items() if not count]
        logger.info("wrote %s (%d panels%s)", args.output, len(counts),
                    f"; no data for: {', '.join(empty)}" if empty else "")

    return run_command(work, failure="cannot draw the picture")


if __name__ == "__main__":
    sys.exit(main())
