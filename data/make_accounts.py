"""Write a wide synthetic customer table (24 features, most of them text, some missing): the bench's real table."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 11
N_ROWS = 20_000
TARGET = "churned"
ID_COLUMN = "account_id"
MISSING_FRACTION = 0.04
# Text columns and their values; the first value of each is the most common.
TEXT = {
    "contract": ("month-to-month", "one-year", "two-year"),
    "payment_method": ("electronic check", "mailed check", "bank transfer", "credit card"),
    "region": ("north", "south", "east", "west", "central", "islands"),
    "plan": ("basic", "standard", "plus", "premium", "family"),
    "internet_service": ("fiber optic", "dsl", "cable", "none"),
    "phone_service": ("yes", "no"),
    "multiple_lines": ("no", "yes", "no phone service"),
    "online_security": ("no", "yes", "no internet service"),
    "tech_support": ("no", "yes", "no internet service"),
    "streaming_tv": ("no", "yes", "no internet service"),
    "paperless_billing": ("yes", "no"),
    "device": ("android", "ios", "feature phone", "tablet", "none"),
    "channel": ("web", "store", "phone", "partner", "referral"),
    "language": ("english", "spanish", "french", "german", "portuguese", "other"),
}
# Columns where some values are missing (numbers as NaN, text as null).
WITH_GAPS = ("tenure_months", "monthly_charges", "satisfaction", "contract", "region", "device")


def make_accounts(n_rows: int = N_ROWS, seed: int = SEED) -> pd.DataFrame:
    """An id, 10 numeric and 14 text columns, and a yes/no churn label that depends on both kinds."""
    rng = np.random.default_rng(seed)
    codes = {name: rng.choice(len(values), size=n_rows, p=_weights(len(values)))
             for name, values in TEXT.items()}
    contract = codes["contract"]
    tenure = np.clip(rng.gamma(2.0, 6.0 + 10.0 * contract), 1, 72).round()
    monthly = np.clip(rng.normal(65.0, 20.0, n_rows) + 8.0 * codes["plan"], 18.0, 160.0).round(2)
    numbers = {
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": (tenure * monthly * rng.uniform(0.9, 1.1, n_rows)).round(2),
        "support_calls": rng.poisson(1.5, n_rows).astype(np.float64),
        "age": rng.integers(18, 90, n_rows).astype(np.float64),
        "data_gb": rng.gamma(2.0, 8.0, n_rows).round(1),
        "late_payments": rng.poisson(0.6, n_rows).astype(np.float64),
        "devices": rng.integers(1, 6, n_rows).astype(np.float64),
        "satisfaction": rng.integers(1, 11, n_rows).astype(np.float64),
        "discount_pct": rng.choice([0.0, 5.0, 10.0, 15.0, 20.0], n_rows),
    }
    logit = (-1.2 + 1.4 * (contract == 0) - 0.9 * (contract == 2) - 0.04 * tenure
             + 0.02 * (monthly - 65.0) + 0.4 * (numbers["support_calls"] - 1.5)
             + 0.5 * (codes["payment_method"] == 0) + 0.6 * (codes["internet_service"] == 0)
             - 0.5 * (codes["tech_support"] == 1) - 0.15 * (numbers["satisfaction"] - 5.5)
             + 0.3 * numbers["late_payments"] + 0.3 * (codes["channel"] == 3))
    churned = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))
    columns: dict[str, object] = {ID_COLUMN: [f"A{i:08d}" for i in range(1, n_rows + 1)]}
    columns.update(numbers)
    for name, values in TEXT.items():
        columns[name] = np.array(values, dtype=object)[codes[name]]
    frame = pd.DataFrame(columns)
    for name in WITH_GAPS:  # drawn after the label: the gaps are noise, not signal
        gaps = rng.random(n_rows) < MISSING_FRACTION
        frame.loc[gaps, name] = np.nan if name in numbers else None
    frame[TARGET] = np.where(churned, "yes", "no")
    return frame


def _weights(count: int) -> np.ndarray:
    """Falling shares: the first value most common, as in real categorical columns."""
    weights = 1.0 / np.arange(1, count + 1)
    return weights / weights.sum()


def write_table(frame: pd.DataFrame, path: Path, *, row_group_size: int = 100_000) -> None:
    """CSV or Parquet by the file's suffix."""
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False, row_group_size=row_group_size)
    else:
        frame.to_csv(path, index=False, float_format="%.2f", lineterminator="\n")


def main(argv: list[str] | None = None) -> int:
    """Write --rows rows to --output (.csv or .parquet)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("accounts.csv"))
    parser.add_argument("--rows", type=int, default=N_ROWS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    write_table(make_accounts(args.rows, args.seed), args.output)
    print(f"wrote {args.rows} rows to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
