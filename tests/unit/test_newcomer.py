"""What a newcomer meets first: the README's commands bind to 127.0.0.1, the lock, the Python check."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
# A paragraph that opens a port to other machines must say how it stays safe.
SAFETY_WORDS = ("API_KEY", "private network")


def readme_paragraphs() -> list[str]:
    """The README's paragraphs and fenced blocks, each with its lines joined by spaces."""
    chunks, fenced = [], False
    for block in re.split(r"(```[a-z]*\n.*?```)", README, flags=re.S):
        if block.startswith("```"):
            fenced = True
            # A fenced block counts as one paragraph per command (continuations joined).
            chunks += [line for line in block.replace("\\\n", " ").splitlines()[1:-1] if line.strip()]
        else:
            chunks += [" ".join(p.split()) for p in re.split(r"\n\s*\n", block) if p.strip()]
    assert fenced, "the README has no fenced command blocks: has its format changed?"
    return chunks


def commands_in(paragraph: str) -> list[str]:
    """The commands of a paragraph: its inline code spans, or the paragraph itself if fenced."""
    spans = re.findall(r"`([^`]+)`", paragraph)
    return spans if spans else [paragraph.split("#")[0]]


def listening_commands() -> list[tuple[str, str]]:
    """(command, paragraph) for every README command that starts a server or publishes a port."""
    found = []
    for paragraph in readme_paragraphs():
        for command in commands_in(paragraph):
            command = " ".join(command.split())
            starts = re.search(r"bentoml serve \S|(docker|podman) run |mlflow (ui|server)\b"
                               r"|dask scheduler|make (serve|demo)\b", command)
            if starts:
                found.append((command, paragraph))
    return found


def binds_outside(command: str) -> bool:
    """Whether the command listens on, or publishes to, more than the loopback address."""
    host = re.search(r"--host[ =](\S+)|HOST=(\S+)", command)
    if host and (host.group(1) or host.group(2)) != "127.0.0.1":
        return True
    if re.search(r"(docker|podman) run ", command):
        published = re.findall(r"(?:-p|--publish)[ =](\S+)", command)
        return any(not p.startswith("127.0.0.1:") for p in published)
    if "bentoml serve" in command:
        return not host  # bentoml serve listens on 0.0.0.0 unless told otherwise
    return "dask scheduler" in command  # listens on every interface, and has no --host here


def test_every_readme_command_binds_to_loopback_unless_it_says_how_to_stay_safe():
    commands = listening_commands()
    names = {re.search(r"bentoml serve|run|mlflow|dask|make", c).group(0) for c, _ in commands}
    assert names >= {"bentoml serve", "run", "mlflow", "make"}, commands
    unsafe = [c for c, paragraph in commands
              if binds_outside(c) and not any(word in paragraph for word in SAFETY_WORDS)]
    assert not unsafe, f"README commands open to other machines with no word on safety: {unsafe}"
    # The README's own way of opening up is recognised as such (the checks above can fail).
    assert any(binds_outside(c) for c, _ in commands)


def test_mlflow_ui_and_server_default_to_loopback():
    import click
    from mlflow.cli import cli

    for name in ("ui", "server"):
        command = cli.get_command(click.Context(cli), name)
        host = next(p for p in command.params if p.name == "host")
        assert host.default in ("127.0.0.1", "localhost"), (name, host.default)


def test_make_serve_binds_to_loopback_by_default():
    dry = subprocess.run(["make", "-s", "-n", "serve", f"VENV={sys.prefix}"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert re.search(r"bentoml serve --host 127\.0\.0\.1 --port 3000$", dry, flags=re.M), dry


def make_setup(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`make setup` into a venv under tmp_path with the given variables."""
    return subprocess.run(["make", "--no-print-directory", "setup", f"VENV={tmp_path / 'venv'}", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_unsupported_python_is_refused_in_one_line_naming_it(tmp_path):
    found = f"{sys.version_info.major}.{sys.version_info.minor}"
    others = [v for v in ("3.11", "3.12", "3.13") if v != found]
    proc = make_setup(tmp_path, f"PYTHON_BASE={sys.executable}", f"SUPPORTED_PYTHONS={' '.join(others)}")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"is Python {found}." in lines[0] and sys.executable in lines[0]
    assert f"supported: {', '.join(others)}" in lines[0]
    assert "make PYTHON_BASE=python3.12 setup" in lines[0]
    assert not (tmp_path / "venv").exists()


def test_missing_python_is_refused_in_one_line(tmp_path):
    proc = make_setup(tmp_path, "PYTHON_BASE=python2.9-not-here")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "PYTHON_BASE=python2.9-not-here cannot be run" in lines[0]
    assert not (tmp_path / "venv").exists()


def test_lock_pins_every_package_with_hashes_at_the_versions_pyproject_names():
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text(encoding="utf-8"))
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert lock["requires-python"].replace(" ", "") == project["requires-python"]
    locked = {p["name"]: p for p in lock["package"]}
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    for pin in pins:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]+\])?==(\S+)", pin.split(";")[0]).groups()
        assert locked[name.lower().replace("_", "-")]["version"] == version, pin
    for name, package in locked.items():
        if package["source"].get("editable") or package["source"].get("virtual"):
            continue  # this project itself
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f["hash"].startswith("sha256:") for f in files), name
    assert len(locked) > 100  # the transitive packages, not only the ones pyproject names
