"""The compose balancer stack (docker-compose.yml + docker-compose.lb.yml) as a rollout drives it, with docker or podman."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass

from release.image import REPO_ROOT, build_image, image_exists, image_for
from release.replicas import Replica, RolloutFailed, Target

logger = logging.getLogger(__name__)

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.lb.yml")
BALANCER = "lb"  # the compose service of the balancer
TEMPLATE = "service"  # the compose service whose settings a spare replica copies
RUN_DIR = "/tmp/balancer"  # where the balancer image runs nginx (deploy/nginx/Dockerfile)
RELOAD = "/etc/classifier-lb/reload.sh"
PORT = 3000  # the service's port inside its image
TIMEOUT = 300  # bounds for one engine command, so that a stuck engine fails the rollout instead of hanging
# Variables the engine, not compose, puts into a container: a spare gets its own.
ENGINE_ENV = {"HOSTNAME", "HOME", "TERM", "container", "PATH"}

# Run by the replica's own Python (the image has no curl): one HTTP call to the service inside it,
# the request on stdin (a JSON line, then the body), the status and body on stdout.
CALL = r"""
import json, sys, urllib.error, urllib.request
head = json.loads(sys.stdin.buffer.readline())
body = sys.stdin.buffer.read() or None
request = urllib.request.Request("http://127.0.0.1:%d" + head["path"], data=body, method=head["method"],
                                 headers=head["headers"])
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        status, data = answer.status, answer.read()
except urllib.error.HTTPError as error:
    status, data = error.code, error.read()
except OSError as error:
    status, data = 0, str(error).encode()
sys.stdout.buffer.write(b"%%d\n" %% status + data)
""" % PORT


@dataclass
class ComposeStack:
    """Replicas are compose services named in the balancer's list, plus one spare container during a rollout."""

    engine: str
    project: str
    files: tuple[str, ...] = COMPOSE_FILES

    def _run(self, argv: list[str], *, stdin: bytes = b"", env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=REPO_ROOT, timeout=TIMEOUT)
        if check and proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
            raise RolloutFailed(f"`{' '.join(argv[:3])} ...` exited {proc.returncode}: "
                                f"{lines[-1] if lines else 'no output'}")
        return proc

    def _compose(self, *args: str, env: dict[str, str]) -> None:
        base = ["podman-compose"] if self.engine == "podman" else [self.engine, "compose"]
        files = [arg for name in self.files for arg in ("-f", str(REPO_ROOT / name))]
        self._run([*base, "-p", self.project, *files, *args], env=env)

    def _inspect(self, name: str) -> dict:
        return json.loads(self._run([self.engine, "inspect", name]).stdout)[0]

    def _container(self, replica: Replica | str) -> str:
        """The container of a compose service (the spare's name is its container's)."""
        name = replica if isinstance(replica, str) else replica.name
        if name.startswith(self._spare_prefix):
            return name
        out = self._run([self.engine, "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                         "--filter", f"label=com.docker.compose.service={name}"]).stdout.split()
        if not out:
            raise RolloutFailed(f"no running container of service {name} in compose project {self.project}: start "
                                f"the balancer stack first (docker-compose.lb.yml), or name it with --project")
        return out[0].decode()

    @property
    def _spare_prefix(self) -> str:
        return f"{self.project}-rollout-"

    def rotation(self) -> list[Replica]:
        """The replicas the balancer's nginx has now (its upstreams.conf), as HOST:PORT."""
        text = self._run([self.engine, "exec", self._container(BALANCER), "cat", f"{RUN_DIR}/upstreams.conf"])
        addresses = [line.split()[1] for line in text.stdout.decode().splitlines() if line.startswith("server ")]
        return [Replica(name=address.rpartition(":")[0], address=address) for address in addresses]

    def prepare(self, target: Target) -> None:
        """Build the target's image, unless the engine has it already."""
        if not image_exists(self.engine, image_for(target.bento_tag)):
            logger.info("building %s", image_for(target.bento_tag))
            build_image(self.engine, target.bento_tag)

    def start_spare(self, target: Target) -> Replica:
        """A container of the target's image with `service`'s settings, on the stack's network, out of rotation."""
        template = self._inspect(self._container(TEMPLATE))
        image_env = set(self._inspect(template["Image"]).get("Config", {}).get("Env") or [])
        env = [item for item in template["Config"]["Env"] or []
               if item not in image_env and item.partition("=")[0] not in ENGINE_ENV]
        network = next(iter(template["NetworkSettings"]["Networks"]))
        name = f"{self._spare_prefix}v{target.version}"
        self._run([self.engine, "rm", "-f", name], check=False)  # left by a rollout that was interrupted
        self._run([self.engine, "run", "-d", "--name", name, "--network", network,
                   *[arg for item in env for arg in ("-e", item)], image_for(target.bento_tag)])
        return Replica(name=name, address=f"{name}:{PORT}")

    def recreate(self, replica: Replica, target: Target) -> Replica:
        """Stop the service's container and let compose start it again from the target's image."""
        self.remove(replica)
        self._compose("up", "-d", "--no-deps", replica.name,
                      env={**os.environ, "SERVICE_IMAGE": image_for(target.bento_tag)})
        return replica

    def rotate(self, replicas: list[Replica]) -> None:
        """Give the balancer exactly these replicas; return once its old workers finished their requests."""
        upstreams = " ".join(r.address for r in replicas)
        self._run([self.engine, "exec", "-e", f"UPSTREAMS={upstreams}", self._container(BALANCER),
                   "sh", RELOAD, RUN_DIR])

    def remove(self, replica: Replica) -> None:
        """Stop (SIGTERM, then a bounded wait) and remove a replica's container."""
        container = self._container(replica)
        self._run([self.engine, "stop", "-t", "30", container], check=False)
        self._run([self.engine, "rm", "-f", container], check=False)

    def alive(self, replica: Replica) -> bool:
        """Whether the replica's container is running."""
        try:
            return self._inspect(self._container(replica))["State"]["Running"] is True
        except RolloutFailed:
            return False

    def call(self, replica: Replica, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        """One HTTP call to the service, made inside its container (replicas publish no port)."""
        head = json.dumps({"method": method, "path": path, "headers": headers}).encode()
        try:
            proc = self._run([self.engine, "exec", "-i", self._container(replica), "python", "-c", CALL],
                             stdin=head + b"\n" + (body or b""), check=False)
        except RolloutFailed:
            return 0, b"no container"
        status, _, data = proc.stdout.partition(b"\n")
        return (int(status), data) if proc.returncode == 0 and status.isdigit() else (0, proc.stderr)
