import time, pathlib, pytest
from tests.e2e.conftest import start_server
pytestmark = pytest.mark.e2e
def test_hold(served):
    other = start_server(home=served.bentoml_home, env={"MAX_ROWS": "5", "MAX_BODY_BYTES": "200000", "REQUEST_TIMEOUT": "1", "API_KEY": "k"})
    pathlib.Path("/tmp/scratch_urls").write_text(served.url + "\n" + other.url + "\n")
    time.sleep(1500)
