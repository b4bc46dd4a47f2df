"""Invocation records, body capture with masking, retention, `modelgate logs`, JSON logs with
trace ids, and in-process alerts — through the real binary, the openai SDK and the test kit's
mock upstream. Secrets and prompt text are planted and every output is searched for them.
"""
import json
import os
import subprocess
import time

import openai
import pytest
import requests

from conftest import PostReceiver, Server, binary
from test_upstreams import Mock

ADMIN = "mg-test-admin-credential-inv"
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
PROMPT_SECRET = "zebra-umbrella-9913"


class Hooks(PostReceiver):
    """A webhook receiver: every POSTed JSON body, in order."""

    @property
    def received(self):
        return [json.loads(b) for b in self.bodies]


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def hooks():
    h = Hooks()
    yield h
    h.stop()


def models(mock, *ids):
    return "".join(f"""
[[models]]
id = "{i}"
provider = "up"
upstream_id = "gpt-4o-mini"
""" for i in ids)


@pytest.fixture(scope="module")
def gw(mock, hooks, tmp_path_factory):
    config = f"""
[local]
enabled = false

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"

[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

[[providers]]
name = "up"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"
{models(mock, "plain", "captured", "flaky")}

[prices.plain]
input = 1.0
output = 2.0

[invocations.capture]
models = ["captured"]

[alerts]
evaluate_every = "200ms"

[[alerts.rules]]
name = "flaky-upstream-errors"
kind = "error_rate"
model = "flaky"
window = "3s"
threshold = 0.5
min_requests = 5
cooldown = "1h"
webhook = "{hooks.url}/alerts"
"""
    env = {"MG_TEST_UPSTREAM_KEY": UPSTREAM_KEY, "MG_TEST_ADMIN_KEY": ADMIN}
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("inv")), env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def key(gw):
    r = requests.post(gw.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"},
                      json={"name": "inv", "team": "forensics"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def admin(gw, path, **params):
    r = requests.get(gw.url + path, headers={"Authorization": f"Bearer {ADMIN}"},
                     params=params, timeout=10)
    return r


def client(gw, key):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key["key"], max_retries=0)


def wait_records(gw, n, **params):
    """The records matching `params` once there are at least `n` (they are written in batches)."""
    deadline = time.monotonic() + 10
    while True:
        r = admin(gw, "/admin/invocations", limit=1000, **params)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if len(data) >= n or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_every_call_is_recorded_and_the_admin_api_filters_and_pages(gw, key, mock):
    c = client(gw, key)
    ids = []
    for i in range(5):
        raw = c.chat.completions.with_raw_response.create(
            model="plain", max_tokens=12, temperature=0.3,
            messages=[{"role": "user", "content": f"hello {i}"}])
        ids.append(raw.headers["x-request-id"])
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model",
                                  messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="plain", messages=[])

    records = wait_records(gw, 7, key=key["id"])
    assert len(records) == 7
    # Newest first; each record names the caller, the route, the models, the settings.
    assert [r["request_id"] for r in records if r["status"] == 200][::-1] == ids
    ok = next(r for r in records if r["request_id"] == ids[0])
    assert ok["team"] == "forensics" and ok["source_ip"] == "127.0.0.1"
    assert ok["dialect"] == "openai" and ok["route"] == "POST /v1/chat/completions"
    assert ok["model_requested"] == "plain" and ok["model_served"] == "plain"
    assert ok["provider"] == "up" and ok["attempts"] == 1
    assert ok["params"] == {"messages": 1, "max_tokens": 12, "temperature": 0.3}
    assert ok["input_tokens"] == 10 and ok["output_tokens"] == 5
    assert abs(ok["cost_usd"] - (10 * 1.0 + 5 * 2.0) / 1e6) < 1e-12
    assert ok["latency_ms"] > 0 and ok["ttft_ms"] is not None
    assert len(ok["trace_id"]) == 32
    assert ok["request_body"] is None and ok["response_body"] is None

    # Filters.
    errors = wait_records(gw, 2, key=key["id"], status="4xx")
    assert sorted(r["status"] for r in errors) == [400, 404]
    assert {r["error_category"] for r in errors} == {"validation", "not_found"}
    assert [r["status"] for r in wait_records(gw, 1, key=key["id"], error="not_found")] == [404]
    assert len(wait_records(gw, 5, key=key["id"], model="plain", status="ok")) == 5
    assert admin(gw, "/admin/invocations", key=key["id"], min_latency_ms=60_000).json()["data"] == []
    assert admin(gw, "/admin/invocations", key=key["id"], to="2001-01-01").json()["data"] == []

    # Cursor paging: pages of two visit every record once, newest first.
    seen, cursor = [], None
    while True:
        params = {"key": key["id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = admin(gw, "/admin/invocations", **params).json()
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] == (cursor is not None)
        if not cursor:
            break
    assert seen == [r["id"] for r in records]

    # One call by the request id its answer carried.
    one = admin(gw, f"/admin/invocations/{ids[2]}")
    assert one.status_code == 200 and one.json()["request_id"] == ids[2]
    assert admin(gw, "/admin/invocations/not-a-request").status_code == 404

    # Bad filters are clear 400s; the records API is an admin action.
    bad = admin(gw, "/admin/invocations", status="teapot")
    assert bad.status_code == 400 and "status" in bad.json()["error"]["message"]
    assert admin(gw, "/admin/invocations", cursor="zz").status_code == 400
    r = requests.get(gw.url + "/admin/invocations",
                     headers={"Authorization": f"Bearer {key['key']}"}, timeout=10)
    assert r.status_code == 403


def test_captured_bodies_are_masked_and_nothing_secret_reaches_logs_or_records(gw, key, mock):
    c = client(gw, key)
    text = (f"{PROMPT_SECRET}: write to jane.doe@example.com, card 4111 1111 1111 1111, "
            f"call +1 415-555-0132, my key is {key['key']}")
    raw = c.chat.completions.with_raw_response.create(
        model="captured", messages=[{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": text}])
    captured_id = raw.headers["x-request-id"]
    raw = c.chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": text}])
    plain_id = raw.headers["x-request-id"]

    rec = admin(gw, f"/admin/invocations/{captured_id}")
    deadline = time.monotonic() + 10
    while rec.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
        rec = admin(gw, f"/admin/invocations/{captured_id}")
    rec = rec.json()
    request_text = json.dumps(rec["request_body"])
    response_text = json.dumps(rec["response_body"])
    assert rec["request_body"]["modelId"] == "captured"
    assert rec["request_body"]["system"] == [{"text": "Be brief."}]
    # Masked in the request and in the (echoed) response alike; the rest kept.
    for body in (request_text, response_text):
        assert PROMPT_SECRET in body
        for raw_value in ("jane.doe@example.com", "4111 1111 1111 1111", "415-555-0132",
                          key["key"]):
            assert raw_value not in body, raw_value
        for tag in ("[EMAIL]", "[CARD]", "[PHONE]", "[SECRET]"):
            assert tag in body, tag
    assert rec["response_body"]["stopReason"] == "end_turn"

    # Without capture the prompt is nowhere: not in the plain call's record, not in the logs.
    plain = admin(gw, f"/admin/invocations/{plain_id}").json()
    everything = json.dumps(admin(gw, "/admin/invocations", limit=1000).json())
    assert plain["request_body"] is None
    assert everything.count(PROMPT_SECRET) == 2  # the captured request and its echo
    logs = gw.logs()
    for secret in (PROMPT_SECRET, key["key"], UPSTREAM_KEY, ADMIN, "jane.doe@example.com"):
        assert secret not in logs, secret
        if secret != PROMPT_SECRET:
            assert secret not in everything, secret


def test_modelgate_logs_lists_filters_and_follows(gw, key, mock):
    env = {**os.environ, "MODELGATE_STATE_DB": gw.state_db}
    c = client(gw, key)
    rid = c.chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": "cli"}]).headers["x-request-id"]
    wait_records(gw, 1, request_id=rid)
    out = subprocess.run([binary(), "logs", "--config", gw.config_path, "--json", "-n", "3",
                          "--key", key["id"]], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert len(lines) == 3 and lines[-1]["request_id"] == rid  # oldest first, newest last
    table = subprocess.run([binary(), "logs", "--config", gw.config_path, "--status", "4xx",
                            "--since", "1h"], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:2] == ["TIME", "REQUEST_ID"]
    assert all(" 40" in l for l in table.stdout.splitlines()[1:])
    bad = subprocess.run([binary(), "logs", "--config", gw.config_path, "--status", "x"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "status 'x'" in bad.stderr

    follow = subprocess.Popen([binary(), "logs", "--config", gw.config_path, "--json", "-f",
                               "-n", "1"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(follow.stdout.readline())
        assert first["request_id"] == wait_records(gw, 1)[0]["request_id"]
        rid2 = c.chat.completions.with_raw_response.create(
            model="plain", messages=[{"role": "user", "content": "follow"}]
        ).headers["x-request-id"]
        got = json.loads(follow.stdout.readline())
        assert got["request_id"] == rid2
    finally:
        follow.terminate()
        follow.wait(timeout=10)


def test_a_burst_of_upstream_errors_fires_one_alert_and_normal_traffic_none(gw, key, mock, hooks):
    c = client(gw, key)
    for _ in range(10):
        c.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "ok"}])
    time.sleep(1.0)
    assert hooks.received == [], "no alert under normal traffic"
    mock.push(*[{"status": 500, "message": "boom"}] * 30)
    for _ in range(30):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "x"}])
    deadline = time.monotonic() + 5
    while not hooks.received and time.monotonic() < deadline:
        time.sleep(0.05)
    # The burst goes on past several evaluations: still one alert (the cool-down).
    time.sleep(1.0)
    assert len(hooks.received) == 1, hooks.received
    alert = hooks.received[0]
    assert alert["alert"] == "flaky-upstream-errors" and alert["status"] == "firing"
    assert alert["kind"] == "error_rate" and alert["value"] >= 0.5
    assert alert["evidence"]["by_category"]["upstream"] >= 5
    assert len(alert["evidence"]["recent_failed_request_ids"]) == 5


def test_retention_purges_old_records_only_and_json_logs_carry_trace_ids(mock, tmp_path_factory):
    config = f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 1

[[providers]]
name = "up"
type = "openai"
base_url = "{mock.url}/v1"
{models(mock, "plain")}

[invocations]
retention = "4s"
purge_every = "250ms"
"""
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("ret")),
                    env={"MODELGATE_LOG_FORMAT": "json"})
    try:
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        ask = lambda h=None: requests.post(  # noqa: E731
            server.url + "/v1/chat/completions", headers=h or {}, timeout=10,
            json={"model": "plain", "messages": [{"role": "user", "content": "hi"}]})
        t0 = time.monotonic()
        old = ask({"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}).headers["x-request-id"]
        time.sleep(3.0)
        new = ask().headers["x-request-id"]
        ids = lambda: {r["request_id"] for r in  # noqa: E731
                       requests.get(server.url + "/admin/invocations", timeout=10).json()["data"]}
        deadline = time.monotonic() + 2
        while not {old, new} <= ids() and time.monotonic() < deadline:
            time.sleep(0.05)  # records are written in batches, off the call's path
        assert {old, new} <= ids()
        time.sleep(max(0.0, 5.5 - (time.monotonic() - t0)))
        left = ids()
        assert old not in left, "older than the retention period"
        assert new in left, "newer than the retention period"

        # JSON log lines carry the request id and the trace id the client sent.
        lines = [json.loads(l) for l in server.logs().splitlines() if l.startswith("{")]
        access = [l for l in lines if l.get("fields", {}).get("message") == "request"
                  and l.get("span", {}).get("id") == old]
        assert len(access) == 1, lines[-5:]
        assert access[0]["span"]["trace_id"] == trace
        assert access[0]["fields"]["status"] == 200
    finally:
        server.stop()
