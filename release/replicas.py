"""What a rollout works on: the target version, the replicas, the stack that runs them, and its two failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from training.cli import CommandError


class RolloutFailed(CommandError):
    """The rollout stopped; the message says where, and what serves now."""


class VerificationFailed(RolloutFailed):
    """A new replica is not ready or does not answer as the registry model does; the old ones keep serving."""

    exit_code = 3


@dataclass(frozen=True)
class Target:
    """The version to roll out: the registry's @production and the Bento model imported from it."""

    version: str
    run_id: str
    bento_tag: str


@dataclass(frozen=True)
class Replica:
    """One replica: its name on the stack and the HOST:PORT the balancer reaches it at."""

    name: str
    address: str


class Stack(Protocol):
    """Where the replicas run (compose, or processes in the tests): what a rollout needs of it."""

    def rotation(self) -> list[Replica]: ...  # the replicas in the balancer now
    def prepare(self, target: Target) -> None: ...  # e.g. build the image; nothing serves it yet
    def start_spare(self, target: Target) -> Replica: ...  # one more replica, out of rotation
    def recreate(self, replica: Replica, target: Target) -> Replica: ...  # the same slot, new version
    def rotate(self, replicas: list[Replica]) -> None: ...  # exactly these; returns once the rest are drained
    def remove(self, replica: Replica) -> None: ...
    def alive(self, replica: Replica) -> bool: ...
    def call(self, replica: Replica, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]: ...  # status 0: no answer
