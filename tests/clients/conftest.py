"""Start the real `modelgate` binary once per test session and hand tests its URL.

MODELGATE_BIN names the binary (default: target/debug/modelgate under CARGO_TARGET_DIR).
MODELGATE_HOME must hold the pulled models; the server runs with --no-pull.
Set MODELGATE_URL to test an already running server instead (started with GATEWAY_CONFIG).
"""
import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

# The tests read the servers' logs as text lines (a server not on a terminal logs JSON by
# default); a test that wants JSON passes MODELGATE_LOG_FORMAT=json in its server's env.
os.environ.setdefault("MODELGATE_LOG_FORMAT", "text")

# The session server maps AWS model ids onto the embedded models, as an operator would, so the
# clients can call Bedrock ids of every native body family.
GATEWAY_CONFIG = """
[[models]]
id = "anthropic.claude-3-haiku-20240307-v1:0"
aliases = ["claude-haiku"]
upstream_id = "local.smollm2-135m-instruct"

[[models]]
id = "anthropic.claude-v2:1"
upstream_id = "local.smollm2-135m-instruct"

[[models]]
id = "amazon.titan-text-express-v1"
upstream_id = "local.smollm2-135m-instruct"

[[models]]
id = "meta.llama3-8b-instruct-v1:0"
upstream_id = "local.smollm2-135m-instruct"

[[models]]
id = "mistral.mistral-7b-instruct-v0:2"
upstream_id = "local.smollm2-135m-instruct"

[[models]]
id = "amazon.titan-embed-text-v2:0"
upstream_id = "local.all-minilm-l6-v2"

[[models]]
id = "cohere.embed-english-v3"
upstream_id = "local.all-minilm-l6-v2"
"""


class PostReceiver:
    """An HTTP server on loopback that keeps the body of every POST (webhooks, OTLP exports)
    and answers an empty 200 with `content_type`."""

    def __init__(self, content_type="application/json"):
        self.bodies = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.bodies.append(self.rfile.read(int(self.headers.get("content-length", 0))))
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    if os.environ.get("MODELGATE_BIN"):
        return os.environ["MODELGATE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target"
    )
    return os.path.join(target, "debug", "modelgate")


def wait_ready(url, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"modelgate exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("modelgate did not become ready in time")


class Server:
    def __init__(self, extra_args=(), config_text=None, tmp_path=None, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [binary(), "serve", "--listen", f"127.0.0.1:{self.port}", "--no-pull"]
        if config_text is not None:
            path = os.path.join(tmp_path, "modelgate.toml")
            with open(path, "w") as f:
                f.write(config_text)
            args += ["--config", path]
        args += list(extra_args)
        self.log_path = os.path.join(tmp_path or "/tmp", f"modelgate-{self.port}.log")
        self.log = open(self.log_path, "wb")
        # Each server keeps its own keys, usage and audit records.
        self.state_db = os.path.join(tmp_path or "/tmp", f"modelgate-state-{self.port}.db")
        self.config_path = args[args.index("--config") + 1] if "--config" in args else None
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "MODELGATE_STATE_DB": self.state_db, **(env or {})}
        )
        wait_ready(self.url, self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    if os.environ.get("MODELGATE_URL"):
        url = os.environ["MODELGATE_URL"].rstrip("/")
        wait_ready(url, None)
        yield url
        return
    server = Server(config_text=GATEWAY_CONFIG, tmp_path=str(tmp_path_factory.mktemp("server")))
    yield server.url
    server.stop()
    assert server.proc.returncode == 0, server.logs()


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(config_text=None, env=None):
        s = Server(config_text=config_text, tmp_path=str(tmp_path), env=env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
