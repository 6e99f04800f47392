"""The BentoML model store: where it is, an atomic publish into it, and its `latest`; the one user of bentoml._internal."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from pathlib import Path

import bentoml
# Private, and pinned by tests/unit/test_bento_store.py: BentoML 1.4.40 cannot stage a model outside its
# store publicly, and its own `latest` writes (Store.register, _recreate_latest) are not atomic and
# only ever point at the newest version, where a rollback needs an older one.
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore

from release import ImportFailed

STAGING_PREFIX = ".import-staging-"
# Test hook: IMPORT_PAUSE_AT=<step> makes the import stop for good at that step (see pause_point).
PAUSE_ENV = "IMPORT_PAUSE_AT"
PAUSE_STEPS = ("downloaded", "converted", "staged", "publishing", "published")


def pause_point(step: str) -> None:
    """Test hook: with IMPORT_PAUSE_AT=<step>, say so on stderr and block until killed."""
    # A test kills the import at a named step with no timer: it waits for this line, then SIGKILLs.
    if os.environ.get(PAUSE_ENV) == step:
        sys.stderr.write(f"{PAUSE_ENV}: paused at {step}\n")
        sys.stderr.flush()
        threading.Event().wait()


def model_store_path() -> Path:
    """The folder of the BentoML model store that `bentoml.models.get` reads."""
    try:
        return Path(BentoMLContainer.model_store_dir.get())
    except OSError as error:  # BentoML creates its home's folders on first use
        raise ImportFailed(f"cannot write to the BentoML store at {error.filename or 'BENTOML_HOME'}: "
                           f"{error.strerror or error}") from None


def remove_stale_staging(store_root: Path) -> None:
    """Clear what an import killed mid-way left behind; it is outside the store proper."""
    for stale in store_root.parent.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def publish(tag: str, *, source: Path, labels: dict[str, str], metadata: dict, store_root: Path) -> None:
    """Build the Bento model in a staging store beside the real one, then rename it into it."""
    staging = store_root.parent / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    parsed = bentoml.Tag.from_taglike(tag)
    try:
        staging.mkdir(parents=True)
        with bentoml.models.create(tag, labels=labels, metadata=metadata,
                                   _model_store=ModelStore(staging)) as model:
            shutil.copytree(source, model.path, dirs_exist_ok=True)
        pause_point("staged")
        final = store_root / parsed.path()
        final.parent.mkdir(parents=True, exist_ok=True)
        pause_point("publishing")
        os.rename(staging / parsed.path(), final)  # the one step that publishes
        pause_point("published")
        point_latest(store_root, tag)
    except OSError as error:
        raise ImportFailed(f"cannot write to the BentoML store at {store_root}: "
                           f"{error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def point_latest(store_root: Path, tag: str) -> None:
    """Make `name:latest` resolve to this tag, in one atomic replace of the file BentoML reads."""
    parsed = bentoml.Tag.from_taglike(tag)
    latest = store_root / parsed.latest_path()
    latest_tmp = latest.with_name(f".latest-{uuid.uuid4().hex}")
    latest_tmp.write_text(parsed.version)
    os.replace(latest_tmp, latest)
