"""Batch scoring of Parquet and CSV files with the served form in the Bento store (python scripts/score.py)."""
