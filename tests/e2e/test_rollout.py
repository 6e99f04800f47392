"""The rollout's logic on bare `bentoml serve` replicas behind the shipped nginx, under 16 clients.

release.rollout drives a Stack; here it is one of processes (a replica is a `bentoml serve` on a
127.0.0.1 port, the balancer a plain nginx run from deploy/nginx as tests/e2e/test_failover.py runs
it, rotation changes by deploy/nginx/reload.sh). The compose stack is driven the same way by
tests/container/test_rollout.py. No timing is asserted.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from release.replicas import Replica, RolloutFailed, Target, VerificationFailed
from release.rollout import roll_out, watch
from tests.balancer import CONCURRENCY, NGINX, NO_NGINX, ROW, Balancer, Load, reload_balancer, start_balancer
from tests.conftest import free_port, mlflow_uris_restored, use_bentoml_home, use_store
from tests.e2e.conftest import launch_server
from tests.servers import stop_process_group

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(NGINX is None, reason=NO_NGINX)]

# Generous bounds for "eventually", so that a broken set-up fails instead of hanging; not measurements.
READY_TIMEOUT = 120.0


@dataclass
class ProcessStack:
    """Replicas as `bentoml serve` processes sharing one model store, behind a plain nginx."""

    home: Path
    balancer: Balancer | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # address -> replica name
    started: int = 0

    def serve(self, name: str, target: Target) -> Replica:
        """Start a replica of target on a free port, without waiting (the rollout waits)."""
        port = free_port()
        self.processes[name], _ = launch_server(home=self.home, port=port, env={"BENTO_MODEL_TAG": target.bento_tag})
        self.started += 1
        self.names[f"127.0.0.1:{port}"] = name
        return Replica(name=name, address=f"127.0.0.1:{port}")

    def rotation(self) -> list[Replica]:
        return [Replica(self.names[address], address) for address in self.balancer.upstreams()]

    def prepare(self, target: Target) -> None:
        pass  # `bentoml serve` reads the store the import wrote: nothing to build

    def start_spare(self, target: Target) -> Replica:
        return self.serve(f"spare-v{target.version}", target)

    def recreate(self, replica: Replica, target: Target) -> Replica:
        self.remove(replica)
        return self.serve(replica.name, target)

    def rotate(self, replicas: list[Replica]) -> None:
        done = reload_balancer(self.balancer, [r.address for r in replicas])
        if done.returncode != 0:
            raise RolloutFailed(f"reload.sh exited {done.returncode}: {done.stderr.strip()}")

    def remove(self, replica: Replica) -> None:
        stop_process_group(self.processes.pop(replica.name))

    def alive(self, replica: Replica) -> bool:
        process = self.processes.get(replica.name)
        return process is not None and process.poll() is None

    def call(self, replica: Replica, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            answer = httpx.request(method, f"http://{replica.address}{path}", content=body, headers=headers,
                                   timeout=30)
        except httpx.TransportError as error:
            return 0, str(error).encode()
        return answer.status_code, answer.content

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process_group(process)


@dataclass
class Setting:
    """The module's registry, stack and balancer."""

    directory: Path
    settings: object
    stack: ProcessStack
    balancer: Balancer
    versions: list[str]  # every registered version, oldest first
    first: Target  # what the replicas serve at the start

    def promote(self, version: str) -> None:
        """Move @production to version by hand (as README "Shadow" says to promote a chosen one)."""
        import mlflow

        mlflow.MlflowClient().set_registered_model_alias(self.settings.registered_model_name, "production", version)

    def served_versions(self) -> set[str]:
        with httpx.Client(timeout=30) as client:
            return {client.post(f"{self.balancer.url}/predict", json=ROW).json()["model"]["version"]
                    for _ in range(40)}


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory, trained_template: Path) -> Iterator[Setting]:
    """The trained store, promoted and imported; two replicas of @production behind nginx."""
    directory = tmp_path_factory.mktemp("rollout")
    shutil.copy(trained_template / "mlflow.db", directory / "mlflow.db")
    with pytest.MonkeyPatch.context() as monkeypatch, mlflow_uris_restored():
        settings = use_store(monkeypatch, directory)
        monkeypatch.delenv("API_KEY", raising=False)
        home = use_bentoml_home(monkeypatch, directory / "bentoml")
        import mlflow

        from release.rollout import find_target
        from training.promote import promote_best

        promote_best()
        first = find_target(settings)
        from release.importer import import_production

        import_production()
        stack = ProcessStack(home)
        replicas = [stack.serve(name, first) for name in ("a", "b")]
        try:
            balancer = start_balancer([r.address for r in replicas])
            stack.balancer = balancer
            versions = sorted((v.version for v in mlflow.MlflowClient().search_model_versions(
                f"name = '{settings.registered_model_name}'")), key=int)
            yield Setting(directory, settings, stack, balancer, [str(v) for v in versions], first)
        finally:
            stack.stop()
            if stack.balancer is not None:
                stack.balancer.stop()


@pytest.fixture(autouse=True)
def _module_stores(setting: Setting, monkeypatch: pytest.MonkeyPatch, mlflow_uris) -> None:
    """Each test works on the module's registry and BentoML store (the suite gives every test fresh ones)."""
    use_store(monkeypatch, setting.directory)
    use_bentoml_home(monkeypatch, setting.stack.home)
    monkeypatch.delenv("API_KEY", raising=False)


def assert_no_failure(load: Load) -> None:
    assert not load.errors, \
        f"{len(load.errors)} of {len(load.versions) + len(load.errors)} requests failed, e.g. {load.errors[:5]}"


def wait_until_serving(setting: Setting, target_version: str) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(int(READY_TIMEOUT / 0.5)):
            if client.get(f"{setting.balancer.url}/health").status_code == 200 and \
                    setting.served_versions() == {target_version}:
                return
            threading.Event().wait(0.5)  # a poll, not a measured duration
    raise AssertionError(f"the balancer does not answer with version {target_version} only")


def test_a_rollout_under_load_fails_no_request_and_every_answer_then_names_the_new_version(setting, caplog):
    wait_until_serving(setting, setting.first.version)
    new = next(v for v in setting.versions if v != setting.first.version)
    setting.promote(new)
    lines: list[str] = []

    # --dry-run: says what it would do, and does it not.
    assert roll_out(setting.stack, dry_run=True, say=lines.append) is False
    assert len(lines) == 1 and lines[0].startswith(f"would roll version {new} "), lines
    assert "out to a, b," in lines[0], lines
    assert setting.stack.started == 2 and setting.served_versions() == {setting.first.version}

    with Load(setting.balancer.url) as load:
        assert roll_out(setting.stack, say=lines.append, ready_timeout=READY_TIMEOUT) is True
    assert load.versions
    assert_no_failure(load)
    # Both versions answered during the rollout; every answer afterwards names the new one.
    assert {setting.first.version, new} <= set(load.versions), set(load.versions)
    assert setting.served_versions() == {new}
    assert sorted(r.name for r in setting.stack.rotation()) == ["a", "b"]  # the spare is gone
    assert len(setting.stack.processes) == 2
    print(f"\nrollout {setting.first.version} -> {new}: {len(load.versions)} requests at c={CONCURRENCY}, 0 failed; "
          f"steps: {lines[1:]}")

    # Twice is harmless: nothing is started, nothing changes.
    started = setting.stack.started
    assert roll_out(setting.stack, say=lines.append) is False
    assert lines[-1].startswith(f"every replica serves version {new} ")
    assert setting.stack.started == started and setting.served_versions() == {new}


def break_model(home: Path, tag: str) -> None:
    """Change one byte of a file of an imported model: it no longer matches the sha256 the import recorded."""
    name, _, version = tag.partition(":")
    folder = home / "models" / name / version
    victim = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "model.yaml"
                  and p.stat().st_size > 0)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))


def test_a_version_that_fails_verification_leaves_the_old_one_answering_and_exits_3(setting, caplog):
    from release.importer import import_production
    from release.rollout import find_target
    from training.cli import run_command

    before = setting.served_versions()
    assert len(before) == 1
    broken = next(v for v in reversed(setting.versions) if v not in before)
    setting.promote(broken)
    target = find_target(setting.settings)
    import_production()  # imported as it should be, then its files broken on purpose
    break_model(setting.stack.home, target.bento_tag)
    rotation = setting.stack.rotation()

    caplog.set_level(logging.INFO)
    with Load(setting.balancer.url) as load:
        # The broken model never loads: the replica stays not ready, so this bounds the wait.
        code = run_command(lambda: roll_out(setting.stack, ready_timeout=20), failure="rollout failed")
    assert code == VerificationFailed.exit_code == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith(f"error: the new replica spare-v{broken} of version {broken} "), errors
    assert load.versions
    assert_no_failure(load)
    assert set(load.versions) == before
    assert setting.stack.rotation() == rotation and len(setting.stack.processes) == 2
    assert setting.served_versions() == before


def test_watch_rolls_out_when_production_moves(setting):
    back = setting.first.version
    assert setting.served_versions() != {back}
    setting.promote(back)
    stop, said = threading.Event(), []
    watcher = threading.Thread(target=watch, kwargs={"stack": setting.stack, "every": 0.5, "stop": stop,
                                                     "say": said.append, "ready_timeout": READY_TIMEOUT})
    watcher.start()
    try:
        wait_until_serving(setting, back)
    finally:
        stop.set()
        watcher.join(timeout=READY_TIMEOUT * 3)
    assert not watcher.is_alive()
    assert any(line.startswith(f"started spare-v{back} ") for line in said), said
    assert not any(line.startswith("error") for line in said), said


def test_the_balancer_reload_refuses_a_replica_nginx_cannot_resolve_and_changes_nothing(setting):
    before = setting.balancer.upstreams()
    done = reload_balancer(setting.balancer, ["no-such-host.invalid:3000"])
    assert done.returncode == 2 and "refuses" in done.stderr, done.stderr
    assert setting.balancer.upstreams() == before
    assert json.loads(httpx.get(f"{setting.balancer.url}/health", timeout=10).content)["status"] == "ok"
