"""Score a Parquet or CSV file with the model in the BentoML store (see batch.score)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batch.score import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
