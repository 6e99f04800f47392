"""The page a user opens first, http://localhost:3000/, as a real headless Chromium renders it."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest

pytestmark = pytest.mark.e2e

# As the machine's own probe starts it: no sandbox (root), and none of Chromium's background
# connections, which this closed network refuses.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROTOCOL_TAGS = ["Predict", "MLflow scoring", "Open Inference Protocol V2", "Infrastructure"]


@pytest.fixture(scope="module")
def page(served, tmp_path_factory) -> str:
    """The DOM of / once Swagger UI has rendered /docs.json."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium")
    # Virtual time lets the page's scripts run to the end (fetching /docs.json, rendering it) with
    # no wall-clock wait; the timeout only ends a broken run.
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                           "--dump-dom", f"{served.url}/"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_first_page_names_the_service_and_the_served_model(served, page):
    version = httpx.get(f"{served.url}/metadata").json()["version"]
    title = f"classification_service: ClassificationModel version {version}"
    assert f"<title>{title}</title>" in page
    assert re.search(rf'<h2 class="title">{re.escape(title)}<span>', page)
    assert "POST /predict" in page and "curl -s -X POST localhost:3000/predict" in page


def test_the_first_page_groups_the_routes_by_protocol(served, page):
    tags = re.findall(r'data-tag="([^"]+)"', page)
    assert sorted(set(tags)) == sorted(PROTOCOL_TAGS)
    # Each of our operations (operationId "<protocol>_<handler>") in its protocol's group.
    by_operation = {operation: group for group, operation in re.findall(
        r'id="operations-(?!tag-)(\w+?)-((?:native|mlflow|v2)_\w+)"', page)}
    assert by_operation == {
        "native_predict": "Predict", "native_health": "Predict", "native_metadata": "Predict",
        "mlflow_invocations": "MLflow_scoring", "mlflow_ping": "MLflow_scoring", "mlflow_version": "MLflow_scoring",
        **{f"v2_{name}": "Open_Inference_Protocol_V2"
           for name in ("server", "live", "ready", "model", "model_ready", "infer")}}

def test_the_first_page_is_not_bentomls_template(served, page):
    for template_words in ("customize this README", "Slack", "Twitter", "BentoML Prediction Service",
                           "googletagmanager", "Service APIs"):
        assert template_words not in page
