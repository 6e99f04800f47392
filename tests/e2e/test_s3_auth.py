"""A shared registry with MLflow's basic-auth app (artifacts proxied to a real SeaweedFS bucket).

The admin trains and promotes; a user with READ permission imports but can neither register nor
promote; a wrong password is one line with an exit code of its own; promotion records who did it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import mlflow
import pytest

from release.importer import main as import_main
from tests.conftest import lr_grid
from tests.s3_registry import (
    Registry,
    clear_s3_environment,
    start_registry,
    use_registry,
)
from tests.seaweed import seaweed_module
from tests.servers import forget_mlflow_uris, stop_process_group
from training.artifact_store import EXIT_DENIED, EXIT_LOGIN
from training.config import get_settings
from training.experiments import main as experiments_main
from training.promote import main as promote_main
from training.sweep import run_experiments

pytestmark = pytest.mark.e2e

seaweed = seaweed_module()


@dataclass(frozen=True)
class AuthRegistry:
    """The server and its two users' passwords."""

    registry: Registry
    admin_password: str
    reader_password: str


@pytest.fixture(scope="module")
def auth_registry(seaweed, tmp_path_factory) -> AuthRegistry:
    """`mlflow server --app-name basic-auth`: the admin's password from the environment, a READ user."""
    root = tmp_path_factory.mktemp("auth-server")
    admin_password, reader_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    config = root / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
                      "admin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    registry = start_registry(seaweed, root / "server", mode="proxied", app_name="basic-auth", extra_env={
        "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
            from mlflow.server import get_app_client

            get_app_client("basic-auth", tracking_uri=registry.url).create_user("reader", reader_password)
        yield AuthRegistry(registry, admin_password, reader_password)
    finally:
        stop_process_group(registry.process)


def _as(monkeypatch, auth: AuthRegistry, seaweed, user: str, password: str) -> None:
    clear_s3_environment(monkeypatch)
    use_registry(monkeypatch, auth.registry, seaweed)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _one_line(capsys) -> str:
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert "Traceback" not in out.out + out.err and len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def trained_by_admin(auth_registry, seaweed, monkeypatch, capsys, mlflow_uris):
    """The admin's sweep and promotion (once per module: a later call finds them)."""
    _as(monkeypatch, auth_registry, seaweed, "admin", auth_registry.admin_password)
    client = mlflow.MlflowClient()
    if not client.search_model_versions(f"name = '{get_settings().registered_model_name}'"):
        run_experiments(dataset_name="iris", grid=lr_grid([1.0, 10.0], ["l2"]))
        assert promote_main([]) == 0
    capsys.readouterr()
    yield client
    forget_mlflow_uris()


def test_promotion_records_who_promoted(trained_by_admin):
    name = get_settings().registered_model_name
    production = trained_by_admin.get_model_version_by_alias(name, "production")
    assert production.tags["promoted_by"] == "admin"


def test_a_read_only_user_imports_but_cannot_register_or_promote(trained_by_admin, auth_registry, seaweed,
                                                                monkeypatch, capsys):
    name = get_settings().registered_model_name
    held = trained_by_admin.get_model_version_by_alias(name, "production").version
    versions = len(trained_by_admin.search_model_versions(f"name = '{name}'"))
    _as(monkeypatch, auth_registry, seaweed, "reader", auth_registry.reader_password)
    assert import_main([]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"imported classification_model:v{held}-")

    assert promote_main(["--force"]) == EXIT_DENIED
    line = _one_line(capsys)
    assert line.startswith("error: ") and "'reader'" in line and auth_registry.registry.url in line, line
    assert experiments_main(["--C", "0.1", "--penalty", "l2"]) == EXIT_DENIED
    assert "'reader'" in _one_line(capsys)
    _as(monkeypatch, auth_registry, seaweed, "admin", auth_registry.admin_password)
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(name, "production").version == held
    assert len(client.search_model_versions(f"name = '{name}'")) == versions


@pytest.mark.parametrize("command", [import_main, promote_main, experiments_main], ids=["import", "promote", "train"])
def test_a_wrong_password_is_one_line_with_its_own_exit_code(command, trained_by_admin, auth_registry, seaweed,
                                                             monkeypatch, capsys):
    wrong = "wrong-" + secrets.token_hex(6)
    _as(monkeypatch, auth_registry, seaweed, "reader", wrong)
    assert command([]) == EXIT_LOGIN
    line = _one_line(capsys)
    assert line.startswith("error: ") and "refused the login of user 'reader'" in line, line
    assert wrong not in line and auth_registry.reader_password not in line
