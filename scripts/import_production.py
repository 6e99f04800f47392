"""Import the registry's production model into the BentoML model store (see release.importer)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from release.importer import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
