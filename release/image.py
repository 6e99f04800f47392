"""Build the service's image for an imported model: `bentoml build` + `bentoml containerize`, tagged v<version>-<run> and latest."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from training.cli import CommandError, configure_logging, run_command

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_REPOSITORY = "classification_service"  # the Bento's name (service.py), and so the image's


class BuildFailed(CommandError):
    """The image could not be built; the message names the step and its last line."""


def image_for(bento_model_tag: str) -> str:
    """The image that holds a Bento model: classification_service:<the model's version>."""
    return f"{IMAGE_REPOSITORY}:{bento_model_tag.partition(':')[2]}"


def image_exists(engine: str, image: str) -> bool:
    """Whether the engine has the image already."""
    return subprocess.run([engine, "image", "inspect", image], capture_output=True,
                          stdin=subprocess.DEVNULL).returncode == 0


def _run(step: str, argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "BENTOML_DO_NOT_TRACK": "True",
                               # bentoml 1.4.40's containerize declares --quiet twice; click warns on every run.
                               "PYTHONWARNINGS": "ignore:The parameter --quiet is used more than once:UserWarning"})
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise BuildFailed(f"{step} exited {proc.returncode}: {lines[-1] if lines else 'no output'}")


def build_image(engine: str, bento_model_tag: str) -> str:
    """Build the Bento of the service and containerize it as the image of bento_model_tag, the model it packs."""
    # service.py packs BENTO_MODEL_TAG (classification_model:latest by default, which the import
    # points at the model it imports): the caller passes the tag that resolves to.
    image = image_for(bento_model_tag)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    _run("bentoml build", [bentoml, "build"])
    _run("bentoml containerize", [bentoml, "containerize", f"{IMAGE_REPOSITORY}:latest", "--backend", engine,
                                  "-t", image])
    _run(f"{engine} tag", [engine, "tag", image, f"{IMAGE_REPOSITORY}:latest"])
    return image


def packed_model_tag() -> str:
    """The full tag of the model a Bento would pack (BENTO_MODEL_TAG, the latest by default), or one line why none."""
    import bentoml

    from serving.settings import get_settings

    try:
        return str(bentoml.models.get(get_settings().bento_model_tag).tag)
    except bentoml.exceptions.NotFound:
        raise BuildFailed("no imported model in the BentoML store: run `make import` first") from None


def main(argv: list[str] | None = None) -> int:
    """`make containerize`: the image of the model BENTO_MODEL_TAG names (the store's latest by default)."""
    parser = argparse.ArgumentParser(prog="python -m release.image", description=__doc__)
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE") or "docker",
                        help="docker or podman (default: $CONTAINER_ENGINE, else docker)")
    args = parser.parse_args(argv)
    configure_logging()

    def work() -> None:
        logger.info("built %s (and %s:latest)", build_image(args.engine, packed_model_tag()), IMAGE_REPOSITORY)

    return run_command(work, failure="containerize failed")


if __name__ == "__main__":
    raise SystemExit(main())
