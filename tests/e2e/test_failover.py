"""Failover through the shipped load balancer: two `bentoml serve` replicas behind nginx.

nginx (Debian's package) runs as a plain process with deploy/nginx/nginx.conf exactly as the
compose image runs it: deploy/nginx/configure.sh copies it into a run folder and writes its two
includes (the replicas' addresses, the listen address). Under a load of 16 concurrent clients
for 20 s, one replica is killed (SIGKILL to its process group) at 5 s: the clients must see no
failed request. Then that replica is started again on the same address, and the balancer must
send it traffic again once it is ready. No timing is asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.balancer import NO_NGINX, NGINX, Balancer, start_balancer
from tests.conftest import use_bentoml_home, use_store
from tests.e2e.conftest import serve_command
from tests.servers import launch_and_wait, metric_total, start_on_free_port, stop_process_group


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(NGINX is None, reason=NO_NGINX),
]

ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}
CONCURRENCY = 16
LOAD_SECONDS = 20.0
KILL_AFTER = 5.0
# Generous bounds for "eventually" (a replica starting, the balancer trying it again); they
# make a broken set-up fail instead of hang, and are not measurements.
READY_TIMEOUT = 120.0
RETURN_TIMEOUT = 60.0


@dataclass
class Replica:
    """One `bentoml serve` on 127.0.0.1, with a BentoML home of its own sharing home's model store."""

    name: str
    home: Path
    port: int | None = None  # chosen at the first start, kept for good: the balancer knows it
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        """Serve and wait until /readyz answers 200: first on a free port (another one if that
        port is taken before the server binds it), then again on that same port."""
        if self.port is None:
            start_on_free_port(self._serve)
        else:
            self._serve(self.port)

    def _serve(self, port: int) -> None:
        """Start on port and wait for /readyz; PortTaken if another process bound it first."""
        self.starts += 1
        # As tests/e2e/conftest.py start_server does, with a log per start: a restart keeps the
        # log of the killed run.
        argv, env = serve_command(home=self.home, port=port, env=None)
        self.process = launch_and_wait(argv, ready_url=f"http://127.0.0.1:{port}/readyz", env=env,
                                       log=self.home.parent / f"serve-{self.name}-{self.starts}.log",
                                       timeout=READY_TIMEOUT)
        self.port = port

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a crash of the whole replica would.

        The process group alone is not enough: BentoML's supervisor (circus) starts each worker
        in a session of its own, and a worker outlives a killed group, still serving on the
        socket it inherited. So every process of the tree goes, each with its own group.
        """
        assert self.process is not None
        leader = psutil.Process(self.process.pid)
        tree = [leader, *leader.children(recursive=True)]
        for process in tree:
            try:
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        gone, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"still running after SIGKILL: {alive}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process)

    def predict_count(self) -> float:
        """/predict answers this replica counted itself, from its own /metrics."""
        return metric_total(httpx.get(f"{self.url}/metrics", timeout=10).text,
                            "classifier_http_request_duration_seconds_count", endpoint="/predict")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, trained_template: Path) -> Iterator[list[Replica]]:
    """Promote and import once, then two replicas serving that model store.

    Each has a BentoML home of its own (tests/e2e/conftest.py private_home): two servers on one
    home would share (and wipe at start) one Prometheus multiprocess folder.
    """
    directory = tmp_path_factory.mktemp("failover")
    shutil.copy(trained_template / "mlflow.db", directory / "mlflow.db")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_store(monkeypatch, directory)
        home = use_bentoml_home(monkeypatch, directory / "bentoml")
        from release.importer import import_production
        from training.promote import promote_best

        promote_best()
        import_production()
    started = [Replica("a", home), Replica("b", home)]
    try:
        for replica in started:
            replica.start()
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory, replicas: list[Replica]) -> Iterator[Balancer]:
    """nginx with the shipped config in front of the replicas."""
    started = start_balancer([r.address for r in replicas])
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Outcome:
    """What one client saw of one request."""

    started: float
    upstream: str  # X-Upstream: "a" or "a, b" when the balancer retried on b
    error: str = ""  # empty when the answer was 200 with a setosa prediction

    @property
    def answered_by(self) -> str:
        return self.upstream.split(",")[-1].strip()


@dataclass
class Load:
    """CONCURRENCY clients posting one row in a loop, each with its own keep-alive connection."""

    url: str
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, until: float) -> None:
        seen = []
        with httpx.Client(timeout=30) as client:
            while (now := time.monotonic()) < until:
                try:
                    response = client.post(f"{self.url}/predict", json=ROW)
                    upstream = response.headers.get("x-upstream", "")
                    if response.status_code != 200:
                        error = f"{response.status_code} {response.text[:200]}"
                        seen.append(Outcome(now, upstream, error))
                    elif response.json()["predictions"][0]["label"] != "setosa":
                        seen.append(Outcome(now, upstream, f"wrong answer {response.text[:200]}"))
                    else:
                        seen.append(Outcome(now, upstream))
                except Exception as error:  # any transport error is a failed request too
                    seen.append(Outcome(now, "", f"{type(error).__name__}: {error}"))
        with self.lock:
            self.outcomes.extend(seen)

    def run(self, seconds: float, *, at: float | None = None, action=None) -> float | None:
        """Load for `seconds`; call action() `at` seconds in; return when it finished (monotonic)."""
        until = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client, args=(until,), daemon=True)
                   for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        done = None
        if action is not None:
            time.sleep(at)
            action()
            done = time.monotonic()
        for thread in threads:
            thread.join(timeout=seconds + 120)
        assert not any(thread.is_alive() for thread in threads), "a load client did not finish"
        return done


def _failures(outcomes: list[Outcome]) -> str:
    failed = [o for o in outcomes if o.error]
    return f"{len(failed)} of {len(outcomes)} requests failed, e.g. {[o.error for o in failed[:5]]}"


def test_a_replica_killed_under_load_costs_no_request_and_comes_back_after_a_restart(replicas, balancer):
    first, second = replicas
    load = Load(balancer.url)
    killed_at = load.run(LOAD_SECONDS, at=KILL_AFTER, action=first.kill)
    outcomes = load.outcomes

    assert outcomes and not any(o.error for o in outcomes), _failures(outcomes)
    before = [o for o in outcomes if o.started < killed_at - 0.5]
    after = [o for o in outcomes if o.started > killed_at]
    # Both replicas took load before the kill; after it, only the survivor answered...
    assert {o.answered_by for o in before} == {first.address, second.address}
    assert after and {o.answered_by for o in after} == {second.address}
    # ...and requests that reached the dead replica were sent on to the other by the balancer,
    # unseen by the clients (in flight at the kill, or later attempts to bring it back).
    retried = [o for o in outcomes if o.upstream.startswith(f"{first.address}, ")]
    assert retried, "no request was retried: the kill went unnoticed by the balancer"
    assert {o.answered_by for o in retried} == {second.address}
    print(f"\nfailover: {len(outcomes)} requests in {LOAD_SECONDS:.0f} s at c={CONCURRENCY}, 0 failed; "
          f"{len(retried)} retried on the survivor by the balancer; replica killed at {KILL_AFTER:.0f} s")

    # The replica comes back on its address; the balancer tries it again and sends it traffic.
    first.start()
    returned = False
    deadline = time.monotonic() + RETURN_TIMEOUT
    with httpx.Client(timeout=30) as client:
        while not returned and time.monotonic() < deadline:
            response = client.post(f"{balancer.url}/predict", json=ROW)
            assert response.status_code == 200, response.text
            returned = response.headers["x-upstream"].split(",")[-1].strip() == first.address
            time.sleep(0.05)
    assert returned, f"the restarted replica got no request through the balancer in {RETURN_TIMEOUT:.0f} s"

    # Back in rotation, not one lucky request: under load again, both replicas answer, and
    # the restarted one counts the requests itself.
    load = Load(balancer.url)
    load.run(3.0)
    assert load.outcomes and not any(o.error for o in load.outcomes), _failures(load.outcomes)
    shares = {address: sum(o.answered_by == address for o in load.outcomes)
              for address in (first.address, second.address)}
    assert all(shares.values()), shares
    print(f"after the restart: {len(load.outcomes)} requests, 0 failed, answered by "
          f"restarted/survivor {shares[first.address]}/{shares[second.address]}")
    assert first.predict_count() >= shares[first.address]
    assert "upstream=" in balancer.log.read_text(errors="replace")  # the access log names replicas
