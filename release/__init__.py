"""The release step: import the registry's production model into the BentoML store; ImportFailed, its one error."""

from training.cli import CommandError


class ImportFailed(CommandError):
    """The production model cannot be imported; the message says why in one line."""
