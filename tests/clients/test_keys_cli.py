"""The key and usage commands, and when the gateway insists on authentication: `modelgate keys
create` bootstraps a key straight into the store, the gateway then refuses anonymous callers,
`modelgate usage` reports the calls, a key revoked from the command line stops working; a
gateway on a non-loopback address with no credentials refuses to start; a soft budget notifies
its webhook once.
"""
import http.server
import json
import os
import subprocess
import threading
import time

import openai
import pytest
import requests

from conftest import Server, binary, free_port
from test_upstreams import Mock

MODEL = "anthropic.claude-3-sonnet-20240229-v1:0"


def cli(env, *args):
    r = subprocess.run([binary(), *args], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def config(mock, extra=""):
    return f"""
[local]
enabled = false

[auth]
cache_ttl = "0s"
{extra}

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "{MODEL}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[prices."{MODEL}"]
input = 100.0
output = 0.0
"""


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


def test_cli_bootstraps_keys_and_reports_usage(tmp_path, mock):
    state = str(tmp_path / "state.db")
    cfg = tmp_path / "cli.toml"
    cfg.write_text(config(mock))
    env = {"MODELGATE_STATE_DB": state, "MG_TEST_UPSTREAM_KEY": "sk-upstream-test"}
    out = cli(env, "keys", "create", "--name", "bootstrap", "--team", "ops", "--config", str(cfg))
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    key_id, secret = fields["id"].strip(), fields["key"].strip()
    assert secret.startswith("mg_")
    listed = cli(env, "keys", "list", "--config", str(cfg))
    assert key_id in listed and "active" in listed and secret not in listed

    # The server opens the state file the command line wrote (env overrides the helper's own).
    server = Server(config_text=config(mock), tmp_path=str(tmp_path), env=env)
    try:
        anonymous = requests.post(server.url + "/v1/chat/completions", timeout=10,
                                  json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert anonymous.status_code == 401
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        deadline = time.time() + 10
        while True:
            usage = cli(env, "usage", "--config", str(cfg), "--group-by", "team,key,model")
            row = [line for line in usage.splitlines() if key_id in line]
            if row and row[0].split()[4] == "3":
                break
            assert time.time() < deadline, usage
            time.sleep(0.3)
        # ops, key, model, day (-), 3 requests, 30 input tokens, …, 30 × $0.0001.
        cols = row[0].split()
        assert cols[0] == "ops" and cols[2] == MODEL and cols[5] == "30"
        assert abs(float(cols[7]) - 0.003) < 1e-9
        cli(env, "keys", "revoke", key_id, "--config", str(cfg))
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    finally:
        server.stop()


def test_no_credentials_on_a_public_address_refuses_to_start(tmp_path, mock):
    cfg = tmp_path / "public.toml"
    cfg.write_text(config(mock))
    port = free_port()
    r = subprocess.run([binary(), "serve", "--config", str(cfg), "--listen", f"0.0.0.0:{port}", "--no-pull"],
                       env={**os.environ, "MODELGATE_STATE_DB": str(tmp_path / "empty.db"),
                            "MG_TEST_UPSTREAM_KEY": "x"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "without authentication" in r.stderr and 'auth.mode = "none"' in r.stderr


def test_a_soft_budget_notifies_its_webhook_once(tmp_path, mock):
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    admin = "mg-test-admin-soft"
    server = Server(config_text=config(mock, 'admin_key_env = "MG_TEST_ADMIN_KEY"'), tmp_path=str(tmp_path),
                    env={"MG_TEST_UPSTREAM_KEY": "x", "MG_TEST_ADMIN_KEY": admin})
    try:
        k = requests.post(server.url + "/admin/keys", headers={"Authorization": f"Bearer {admin}"}, timeout=10,
                          json={"budgets": [{"name": "heads-up", "limit_usd": 0.0025, "period": "month",
                                             "mode": "soft",
                                             "webhook": f"http://127.0.0.1:{hook.server_address[1]}/budget"}]}).json()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=k["key"], max_retries=0)
        # $0.001 a call: the third crosses $0.0025; a soft budget never blocks.
        for _ in range(6):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        deadline = time.time() + 10
        while not received and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert len(received) == 1, received
        note = received[0]
        assert note["type"] == "budget.exceeded" and note["budget"] == "heads-up" and note["key"] == k["id"]
        assert note["spent_usd"] >= 0.0025
    finally:
        server.stop()
        hook.shutdown()


def test_a_key_made_by_the_command_line_closes_a_running_open_gateway(tmp_path, mock):
    state = str(tmp_path / "open.db")
    cfg = tmp_path / "open.toml"
    cfg.write_text(config(mock))
    env = {"MODELGATE_STATE_DB": state, "MG_TEST_UPSTREAM_KEY": "x"}
    server = Server(config_text=config(mock), tmp_path=str(tmp_path), env=env)
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert requests.post(server.url + "/v1/chat/completions", json=body, timeout=10).status_code == 200
        cli(env, "keys", "create", "--config", str(cfg))
        deadline = time.time() + 15
        while requests.post(server.url + "/v1/chat/completions", json=body, timeout=10).status_code != 401:
            assert time.time() < deadline, "the open gateway never closed"
            time.sleep(0.5)
    finally:
        server.stop()


def test_metrics_are_open_or_behind_the_admin_credential(tmp_path, mock):
    admin = "mg-test-admin-metrics"
    env = {"MG_TEST_UPSTREAM_KEY": "x", "MG_TEST_ADMIN_KEY": admin}
    open_server = Server(config_text=config(mock, 'admin_key_env = "MG_TEST_ADMIN_KEY"'),
                         tmp_path=str(tmp_path), env=env)
    try:
        r = requests.get(open_server.url + "/metrics", timeout=10)
        assert r.status_code == 200 and "modelgate_requests_total" in r.text
    finally:
        open_server.stop()
    protected = config(mock, 'admin_key_env = "MG_TEST_ADMIN_KEY"') + "\n[metrics]\nprotected = true\n"
    server = Server(config_text=protected, tmp_path=str(tmp_path), env=env)
    try:
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 401
        r = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code == 200 and "modelgate_in_flight_requests" in r.text
        # A key without modelgate:GetMetrics is refused.
        k = requests.post(server.url + "/admin/keys", json={}, timeout=10,
                          headers={"Authorization": f"Bearer {admin}"}).json()
        r = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {k['key']}"}, timeout=10)
        assert r.status_code == 403
    finally:
        server.stop()
