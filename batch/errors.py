"""The failures of a batch job, each one line and an exit code of its own (training.cli prints them)."""

from __future__ import annotations

from training.cli import CommandError


class BadInputFile(CommandError):
    """The input cannot be read, is not Parquet or CSV, or lacks a column the model takes."""

    exit_code = 3


class UnknownModel(CommandError):
    """The Bento model tag names nothing in the store, or its files do not load."""

    exit_code = 4


class BadRow(CommandError):
    """A row the model refuses (as /predict would), named by its number and column."""

    exit_code = 5


class WorkerDied(CommandError):
    """A --jobs / --cluster worker died or the cluster went away mid-job."""

    exit_code = 6


class OutputNotWritable(CommandError):
    """The output (or rejects) file's folder cannot be written."""

    exit_code = 7


class ClusterUnavailable(CommandError):
    """The Dask scheduler cannot be reached, has no workers, or the input is not splittable."""

    exit_code = 8
