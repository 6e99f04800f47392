"""`bentoml build` packs exactly the service's code, even with the BentoML home inside the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from release import bento_store
from tests.conftest import REPO_ROOT, use_bentoml_home

pytestmark = pytest.mark.integration


def _project_copy(root: Path) -> Path:
    """The project's tracked files, copied to root: what a user's checkout holds."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, root / name)
    return root


def test_two_builds_in_a_row_with_the_home_in_the_project_both_pack_only_the_service(tmp_path, monkeypatch):
    project = _project_copy(tmp_path / "project")
    home = use_bentoml_home(monkeypatch, project / ".bentoml-home")
    stand_in = tmp_path / "model"  # the build packs the model's files, it does not load them
    stand_in.mkdir()
    (stand_in / "weights.txt").write_text("a stand-in for an imported model")
    bento_store.publish("classification_model:v1-stand-in", source=stand_in, labels={}, metadata={},
                        store_root=bento_store.model_store_path())
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    for attempt in (1, 2):
        built = subprocess.run([str(bentoml_cli), "build"], cwd=project, env=os.environ.copy(),
                               capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, f"build {attempt}: {built.stderr[-2000:]}"
    bentos = sorted((home / "bentos" / "classification_service").glob("*/src"))
    assert len(bentos) == 2
    expected = {"bentofile.yaml", "service.py",
                *(str(p.relative_to(project)) for p in (project / "serving").rglob("*.py"))}
    for src in bentos:
        assert {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()} == expected
