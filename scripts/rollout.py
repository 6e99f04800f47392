"""Roll the registry's @production version out to the running balancer stack (see release.rollout)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release.rollout import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
