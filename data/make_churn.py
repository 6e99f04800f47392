"""Write the example customer-churn table data/churn.csv, byte for byte reproducibly."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 7
N_ROWS = 400
CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENT_METHODS = ("electronic check", "mailed check", "bank transfer", "credit card")
MISSING_FRACTION = 0.05


def make_churn(n_rows: int = N_ROWS, seed: int = SEED) -> pd.DataFrame:
    """A synthetic churn table whose label depends on contract, tenure, charges and support calls."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(len(CONTRACTS), size=n_rows, p=[0.5, 0.27, 0.23])
    # Longer contracts go with longer-standing customers.
    tenure = np.clip(rng.gamma(2.0, 6.0 + 10.0 * contract), 1, 72).round().astype(int)
    monthly_charges = np.clip(rng.normal(65.0, 20.0, n_rows), 18.0, 120.0).round(2)
    support_calls = rng.poisson(1.5, n_rows)
    payment = rng.choice(len(PAYMENT_METHODS), size=n_rows, p=[0.35, 0.2, 0.23, 0.22])

    logit = (-1.0 + 1.4 * (contract == 0) - 0.9 * (contract == 2) - 0.045 * tenure
             + 0.025 * (monthly_charges - 65.0) + 0.45 * (support_calls - 1.5)
             + 0.6 * (payment == 0))
    churned = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))

    # Some customers never stated a contract or tenure: the loader must keep these gaps.
    tenure_missing = _random_mask(rng, n_rows, MISSING_FRACTION)
    contract_missing = _random_mask(rng, n_rows, MISSING_FRACTION)
    return pd.DataFrame({
        "customer_id": [f"C{i:04d}" for i in range(1, n_rows + 1)],
        "tenure_months": pd.arrays.IntegerArray(tenure, tenure_missing),
        "monthly_charges": monthly_charges,
        "support_calls": support_calls,
        "contract": pd.Series([CONTRACTS[c] for c in contract], dtype=object).where(
            ~contract_missing, None),
        "payment_method": [PAYMENT_METHODS[p] for p in payment],
        "churned": np.where(churned, "yes", "no"),
    })


def _random_mask(rng: np.random.Generator, n_rows: int, fraction: float) -> np.ndarray:
    """True for exactly round(fraction * n_rows) randomly chosen rows."""
    mask = np.zeros(n_rows, dtype=bool)
    mask[rng.choice(n_rows, size=round(fraction * n_rows), replace=False)] = True
    return mask


def main(argv: list[str] | None = None) -> int:
    """Write the table to --output (default: churn.csv next to this script)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("churn.csv"))
    args = parser.parse_args(argv)
    # Fixed float format and line ending so the file is identical on every platform.
    make_churn().to_csv(args.output, index=False, float_format="%.2f", lineterminator="\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
