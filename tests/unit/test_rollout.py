"""The rollout's own decisions, in process: how a replica's answers are judged, and the order of its steps.

The stack here is an in-memory record of calls (no replica runs); the same logic drives real
`bentoml serve` replicas in tests/e2e/test_rollout.py and compose containers in tests/container/test_lb.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from release.replicas import Replica, Target, VerificationFailed
from release.rollout import Probe, Rollout
from release.verify import TOLERANCE

pytestmark = pytest.mark.unit

CLASSES = ["a", "b"]
EXPECTED = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
TARGET = Target(version="7", run_id="r" * 32, bento_tag="classification_model:v7-rrrrrrrrrrrr")


def _probe() -> Probe:
    return Probe(records=[{"x": 1}, {"x": 2}, {"x": 3}], class_names=CLASSES, probabilities=EXPECTED)


def _answer(probabilities: np.ndarray, labels: list[str] | None = None) -> dict:
    labels = labels or [CLASSES[i] for i in probabilities.argmax(axis=1)]
    return {"predictions": [{"label": label, "probabilities": dict(zip(CLASSES, row.tolist()))}
                            for label, row in zip(labels, probabilities)]}


def test_the_registry_models_own_answers_pass():
    assert _probe().check(_answer(EXPECTED + TOLERANCE / 2)) == ""


@pytest.mark.parametrize("answer, why", [
    (_answer(EXPECTED + 10 * TOLERANCE), "largest probability difference 1e-05"),
    (_answer(EXPECTED, ["a", "a", "a"]), "1 of 3 held-out labels differ"),
    (_answer(EXPECTED[:2]), "2 predictions for 3 rows"),
    ({"predictions": [{"label": "a", "probabilities": {"a": 1.0}}] * 3}, "largest probability difference inf"),
])
def test_other_answers_are_refused_with_the_reason(answer, why):
    assert why in _probe().check(answer)


@dataclass
class RecordingStack:
    """Replicas as names with a served tag; every step recorded; `bad` names replicas that answer wrongly."""

    serving: dict[str, str] = field(default_factory=lambda: {"service": "old", "service-2": "old"})
    balancer: list[str] = field(default_factory=lambda: ["service", "service-2"])
    steps: list[str] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)

    def rotation(self) -> list[Replica]:
        return [Replica(name, f"{name}:3000") for name in self.balancer]

    def prepare(self, target: Target) -> None:
        self.steps.append("prepare")

    def start_spare(self, target: Target) -> Replica:
        self.serving["spare"] = target.bento_tag
        self.steps.append("start spare")
        return Replica("spare", "spare:3000")

    def recreate(self, replica: Replica, target: Target) -> Replica:
        assert replica.name not in self.balancer, "recreated while in rotation"
        self.serving[replica.name] = target.bento_tag
        self.steps.append(f"recreate {replica.name}")
        return replica

    def rotate(self, replicas: list[Replica]) -> None:
        assert len(replicas) == 2, "capacity dropped"
        assert all(self.serving[r.name] != "old" or r.name in self.balancer for r in replicas)
        self.balancer = [r.name for r in replicas]
        self.steps.append(f"rotate {' '.join(self.balancer)}")

    def remove(self, replica: Replica) -> None:
        assert replica.name not in self.balancer, "removed while in rotation"
        del self.serving[replica.name]
        self.steps.append(f"remove {replica.name}")

    def alive(self, replica: Replica) -> bool:
        return replica.name in self.serving

    def call(self, replica: Replica, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        if path == "/readyz":
            return 200, b""
        if path == "/metadata":
            return 200, json.dumps({"bento_tag": self.serving[replica.name]}).encode()
        wrong = EXPECTED[:, ::-1] if replica.name in self.bad else EXPECTED
        return 200, json.dumps(_answer(wrong)).encode()


def test_a_verified_spare_stands_in_for_each_replica_while_it_is_recreated():
    stack = RecordingStack()
    Rollout(stack, TARGET, say=lambda line: None).run(_probe())
    assert stack.steps == ["start spare", "rotate spare service-2", "recreate service",
                           "rotate spare service", "recreate service-2", "rotate service-2 service", "remove spare"]
    assert stack.serving == {"service": TARGET.bento_tag, "service-2": TARGET.bento_tag}


def test_a_spare_that_answers_otherwise_is_removed_and_nothing_else_changes():
    stack = RecordingStack(bad={"spare"})
    with pytest.raises(VerificationFailed, match="failed verification: 3 of 3 held-out labels differ") as failed:
        Rollout(stack, TARGET, say=lambda line: None).run(_probe())
    assert failed.value.exit_code == 3
    assert stack.steps == ["start spare", "remove spare"]
    assert stack.balancer == ["service", "service-2"] and stack.serving == {"service": "old", "service-2": "old"}
