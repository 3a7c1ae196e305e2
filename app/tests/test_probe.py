import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from channels_kit.observe.probe import main, probe_heartbeat, probe_http


def test_heartbeat_fresh_stale_missing(tmp_path):
    beat = tmp_path / "beat"
    assert "does not exist" in probe_heartbeat(beat, max_age=30)
    beat.touch()
    assert probe_heartbeat(beat, max_age=30) is None
    old = time.time() - 120
    os.utime(beat, (old, old))
    assert "stuck" in probe_heartbeat(beat, max_age=30)
    assert main(["heartbeat", str(beat), "--max-age", "30"]) == 1


@pytest.fixture
def http_server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_probe(http_server):
    assert probe_http(f"{http_server}/ok", timeout=3) is None
    assert "503" in probe_http(f"{http_server}/down", timeout=3)
    assert main(["http", f"{http_server}/ok"]) == 0
    assert main(["http", "http://127.0.0.1:9/nothing-listens", "--timeout", "1"]) == 1
