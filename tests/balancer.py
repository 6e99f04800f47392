"""The shipped load balancer (deploy/nginx) as a plain nginx process on 127.0.0.1, as the image runs it; clients to load it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT
from tests.servers import launch_and_wait, start_on_free_port, stop_process_group


def _find_nginx() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None)


NGINX = _find_nginx()
NGINX_DIR = REPO_ROOT / "deploy" / "nginx"
CONFIGURE = NGINX_DIR / "configure.sh"
RELOAD = NGINX_DIR / "reload.sh"
ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}  # one iris row: every version answers it
CONCURRENCY = 16
NO_NGINX = "nginx is not installed (Debian/Ubuntu: apt-get install -y nginx): these tests run deploy/nginx/nginx.conf"


@dataclass
class Balancer:
    """A running nginx with the shipped config: its URL, process, run folder and listen address."""

    url: str
    process: subprocess.Popen
    run_dir: Path
    listen: str

    @property
    def log(self) -> Path:
        return self.run_dir / "nginx.log"

    def stop(self) -> None:
        """Stop nginx and remove its run folder."""
        stop_process_group(self.process)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def upstreams(self) -> list[str]:
        """The replicas' addresses in its upstreams.conf now."""
        return [line.split()[1] for line in (self.run_dir / "upstreams.conf").read_text().splitlines()
                if line.startswith("server ")]


def start_balancer(upstreams: list[str]) -> Balancer:
    """nginx in front of upstreams on a free 127.0.0.1 port (another one if that port is taken first:
    nginx exits saying "Address already in use"), in a run folder of its own (Balancer.stop removes it)."""
    def start(port: int) -> Balancer:
        # Not under pytest's tmp folders: run as root, nginx's workers are `nobody`, and they look
        # for the run folder's `draining` notice (nginx.conf), which needs every parent folder open to them.
        run_dir = Path(tempfile.mkdtemp(prefix="balancer-"))
        run_dir.chmod(0o755)
        listen = f"127.0.0.1:{port}"
        env = {**os.environ, "UPSTREAMS": " ".join(upstreams), "LISTEN": listen}
        configured = subprocess.run(["sh", str(CONFIGURE), str(run_dir)], env=env, capture_output=True,
                                    text=True, timeout=30, check=False)
        assert configured.returncode == 0, configured.stderr
        assert (run_dir / "nginx.conf").read_bytes() == (NGINX_DIR / "nginx.conf").read_bytes()
        url = f"http://{listen}"
        # As the image runs it (deploy/nginx/Dockerfile), in the foreground (`daemon off` in the file).
        process = launch_and_wait([NGINX, "-p", f"{run_dir}/", "-c", str(run_dir / "nginx.conf"), "-e", "stderr"],
                                  ready_url=f"{url}/health", log=run_dir / "nginx.log", env=env, timeout=30,
                                  interval=0.1)
        return Balancer(url, process, run_dir, listen)

    return start_on_free_port(start)


def reload_balancer(balancer: Balancer, upstreams: list[str]) -> subprocess.CompletedProcess:
    """deploy/nginx/reload.sh on the running nginx, as `make rollout` runs it in the lb container."""
    env = {**os.environ, "UPSTREAMS": " ".join(upstreams), "LISTEN": balancer.listen, "NGINX": NGINX}
    return subprocess.run(["sh", str(RELOAD), str(balancer.run_dir)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@dataclass
class Load:
    """CONCURRENCY clients posting one row through the balancer until stopped; what each answer said."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    versions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def client(self) -> None:
        versions, errors = [], []
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    answer = client.post(f"{self.url}/predict", json=ROW)
                    if answer.status_code == 200:
                        versions.append(answer.json()["model"]["version"])
                    else:
                        errors.append(f"{answer.status_code} {answer.text[:200]}")
                except Exception as error:  # any transport error is a failed request too
                    errors.append(f"{type(error).__name__}: {error}")
        with self.lock:
            self.versions.extend(versions)
            self.errors.extend(errors)

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CONCURRENCY)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in self.threads), "a load client did not finish"
