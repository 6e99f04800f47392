import time, pathlib, pytest
from tests.e2e.conftest import start_server
pytestmark = pytest.mark.e2e
def test_hold(served):
    other = start_server(home=served.bentoml_home, env={"MAX_ROWS": "5", "MAX_BODY_BYTES": "2000", "REQUEST_TIMEOUT": "1", "API_KEY": "k"})
    pathlib.Path("/tmp/scratch_urls2").write_text(other.url + "\n" + str(other.process.pid) + "\n")
    time.sleep(1500)
