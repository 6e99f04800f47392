"""The batch tests' model and files: the wide table trained, promoted and imported in stores of their own."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data.make_accounts import ID_COLUMN, TARGET, make_accounts, write_table
from tests.conftest import mlflow_uris_restored, use_bentoml_home, use_store

TRAIN_ROWS = 1_500


def import_wide_model(directory: Path) -> Path:
    """Train one logistic regression on the wide table, promote and import it; the BentoML home it is in."""
    from release.importer import import_production
    from training.config import get_settings
    from training.experiments import main as experiments_main
    from training.promote import promote_best

    train = directory / "accounts-train.csv"
    write_table(make_accounts(TRAIN_ROWS, seed=3), train)
    with pytest.MonkeyPatch.context() as monkeypatch, mlflow_uris_restored():
        use_store(monkeypatch, directory)
        home = use_bentoml_home(monkeypatch, directory / "bentoml")
        assert experiments_main(["--data", str(train), "--target", TARGET, "--drop", ID_COLUMN,
                                 "--model", "logistic_regression", "--C", "1", "--penalty", "l2"]) == 0
        promote_best()
        import_production()
    get_settings.cache_clear()
    return home


def write_accounts(path: Path, *, rows: int, seed: int = 9, row_group_size: int = 500) -> pd.DataFrame:
    """rows of the wide table at path (.csv or .parquet, row groups of row_group_size); the frame."""
    frame = make_accounts(rows, seed=seed)
    write_table(frame, path, row_group_size=row_group_size)
    return frame
