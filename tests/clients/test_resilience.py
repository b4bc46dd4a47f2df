"""Resilience through the real binary with real clients: retries, fallback chains down to the
static answer with the headers that say who served, circuit breakers and health checks seen
through the admin API, and streams cut midway ending in each dialect's error event.

Three mock-upstream processes play the upstreams; the paused-clock tests in
crates/core/tests/resilience.rs check the exact waits, these check what clients see.
"""
import time

import anthropic
import botocore.exceptions
import openai
import pytest
import requests

from conftest import Server
from test_upstreams import Mock, bedrock

STATIC = "Our assistant is busy right now; please try again in a few minutes."


@pytest.fixture(scope="module")
def mocks():
    ms = {name: Mock() for name in ("a", "b", "c")}
    yield ms
    for m in ms.values():
        m.stop()


@pytest.fixture(scope="module")
def gateway(mocks, tmp_path_factory):
    a, b, c = mocks["a"].url, mocks["b"].url, mocks["c"].url
    config = f"""
[local]
enabled = false

[resilience.retry]
initial_backoff = "10ms"

[[providers]]
name = "primary"
type = "openai"
base_url = "{a}/v1"

[[providers]]
name = "backup"
type = "anthropic"
base_url = "{b}"

[[providers]]
name = "second"
type = "openai"
base_url = "{c}/v1"

[[models]]
id = "chat"
provider = "primary"
upstream_id = "gpt-4o-mini"
fallbacks = ["chat-backup"]
static_response = "{STATIC}"
fallback_cache = false
[models.breaker]
enabled = false   # the tests here share this model; "fragile" tests the breaker

[[models]]
id = "chat-backup"
provider = "backup"
upstream_id = "claude-3-5-haiku-latest"

[[models]]
id = "fragile"
provider = "second"
upstream_id = "gpt-4o-mini"
[models.retry]
max_attempts = 1
[models.breaker]
min_requests = 4
cool_down = "1s"
half_open_ratio = 1.0
close_after = 1

[[models]]
id = "pair"
providers = ["primary", "second"]
upstream_id = "gpt-4o-mini"
[models.health]
interval = "200ms"
unhealthy_after = 2
"""
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("res")))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(mocks):
    for m in mocks.values():
        m.reset()


def oai(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)


def ask_openai(gateway, model="chat", text="hi"):
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}])
    return raw.headers, raw.parse()


def endpoints(gateway):
    return requests.get(gateway.url + "/admin/endpoints", timeout=5).json()["endpoints"]


def endpoint(gateway, model, provider):
    return next(e for e in endpoints(gateway) if e["model"] == model and e["provider"] == provider)


def wait_for(check, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_throttled_twice_then_answered_on_the_third_attempt(gateway, mocks):
    mocks["a"].push({"status": 429, "message": "slow down"}, {"status": 503, "message": "busy"},
                    {"blocks": [{"text": "third time lucky"}]})
    headers, completion = ask_openai(gateway)
    assert completion.choices[0].message.content == "third time lucky"
    assert headers["x-modelgate-served-by"] == "chat"
    assert headers["x-modelgate-attempts"] == "3"
    assert "x-modelgate-fallback-reason" not in headers
    assert mocks["a"].calls() == 3


def test_bad_request_is_not_retried_and_does_not_fall_back(gateway, mocks):
    mocks["a"].push({"status": 400, "message": "bad parameter"})
    with pytest.raises(openai.BadRequestError):
        ask_openai(gateway)
    assert mocks["a"].calls() == 1 and mocks["b"].calls() == 0


def test_fallback_model_serves_each_dialect_and_headers_say_so(gateway, mocks):
    for _ in range(3):
        mocks["a"].push({"status": 503, "message": "down"})
    mocks["b"].push({"blocks": [{"text": "from the backup"}]})
    headers, completion = ask_openai(gateway)
    assert completion.choices[0].message.content == "from the backup"
    assert headers["x-modelgate-served-by"] == "chat-backup"
    assert headers["x-modelgate-fallback-reason"] == "upstream_error"
    assert headers["x-modelgate-attempts"] == "4"

    for _ in range(3):
        mocks["a"].push({"status": 429, "message": "slow down"})
    r = bedrock(gateway.url).converse(
        modelId="chat", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert r["output"]["message"]["content"][0]["text"]
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert (h["x-modelgate-served-by"], h["x-modelgate-fallback-reason"]) == ("chat-backup", "throttled")

    for _ in range(3):
        mocks["a"].push({"status": 500, "message": "boom"})
    raw = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) \
        .messages.with_raw_response.create(model="chat", max_tokens=16,
                                           messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-modelgate-served-by"] == "chat-backup"
    assert raw.parse().content[0].type == "text"


def test_everything_down_gives_the_static_answer(gateway, mocks):
    for m in (mocks["a"], mocks["b"]):
        requests.post(m.url + "/_mock/faults", json={"rate": 1.0}, timeout=5).raise_for_status()
    headers, completion = ask_openai(gateway)
    assert completion.choices[0].message.content == STATIC
    assert headers["x-modelgate-served-by"] == "static"
    assert headers["x-modelgate-fallback-reason"] == "upstream_error"
    # Streams get it too, as a well-formed stream.
    chunks = list(oai(gateway).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == STATIC


def test_stream_cut_midway_ends_with_each_dialects_error_event(gateway, mocks):
    long_text = "This answer is cut off before it ends, " * 4
    cut = {"blocks": [{"text": long_text}], "pieces": 8, "cut_after": 4}

    mocks["a"].push(cut)
    with pytest.raises(openai.APIError):
        for _ in oai(gateway).chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], stream=True):
            pass

    mocks["a"].push(cut)
    with pytest.raises(anthropic.APIStatusError) as e:
        with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0).messages.stream(
                model="chat", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
            for _ in s:
                pass
    assert e.value.body["error"]["type"] == "overloaded_error"

    mocks["a"].push(cut)
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        response = bedrock(gateway.url).converse_stream(
            modelId="chat", messages=[{"role": "user", "content": [{"text": "hi"}]}])
        for _ in response["stream"]:
            pass
    assert e.value.response["Error"]["Code"] == "serviceUnavailableException"
    # Output had reached the client each time: no retry, no fallback.
    assert mocks["a"].calls() == 3 and mocks["b"].calls() == 0


def test_breaker_opens_shows_in_the_admin_api_and_recovers(gateway, mocks):
    c = mocks["c"]
    for _ in range(4):
        c.push({"status": 503, "message": "down"})
    for _ in range(4):
        with pytest.raises(openai.InternalServerError):
            ask_openai(gateway, model="fragile")
    assert endpoint(gateway, "fragile", "second")["breaker"] == "open"
    with pytest.raises(openai.InternalServerError) as e:
        ask_openai(gateway, model="fragile")
    assert e.value.body["code"] == "circuit_open"
    assert c.calls() == 4, "an open breaker does not touch the upstream"
    time.sleep(1.1)
    assert endpoint(gateway, "fragile", "second")["breaker"] == "half_open"
    headers, _ = ask_openai(gateway, model="fragile")
    assert headers["x-modelgate-served-by"] == "fragile"
    status = endpoint(gateway, "fragile", "second")
    assert status["breaker"] == "closed" and status["times_opened"] >= 1


def test_health_checks_take_a_dead_endpoint_out_and_back(gateway, mocks):
    a, c = mocks["a"], mocks["c"]
    requests.post(c.url + "/_mock/healthy", json={"healthy": False}, timeout=5).raise_for_status()
    wait_for(lambda: not endpoint(gateway, "pair", "second")["health"]["healthy"], "ejection")
    for _ in range(6):
        ask_openai(gateway, model="pair")
    assert (a.calls(), c.calls()) == (6, 0)
    requests.post(c.url + "/_mock/healthy", json={"healthy": True}, timeout=5).raise_for_status()
    wait_for(lambda: endpoint(gateway, "pair", "second")["health"]["healthy"], "return")
    for _ in range(6):
        ask_openai(gateway, model="pair")
    assert c.calls() == 3, "round robin again over both endpoints"


def access_lines(gateway, request_id):
    """The access-log lines (message `request`) of one request, as key=value dicts."""
    import re
    out = []
    for line in gateway.logs().splitlines():
        if f"request{{id={request_id} " in line and re.search(r": request .*\bstatus=", line):
            fields = dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line.split(": request ", 1)[-1]))
            out.append(fields)
    return out


def test_access_log_of_a_stream_that_fails_midway_has_the_failure_and_full_duration(gateway, mocks):
    # Four pieces 200 ms apart, then the connection is cut: the client saw a 200 head at once.
    mocks["a"].push({"blocks": [{"text": "This answer is cut off before it ends. " * 4}],
                     "pieces": 8, "cut_after": 4, "chunk_delay_ms": 200})
    started = time.monotonic()
    r = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=30, json={
        "model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    request_id = r.headers["x-request-id"]
    body = r.text
    elapsed = time.monotonic() - started
    assert '"error"' in body and "[DONE]" not in body
    deadline = time.monotonic() + 5
    while not access_lines(gateway, request_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = access_lines(gateway, request_id)
    assert len(lines) == 1, lines  # one line per request, written at the stream's end
    line = lines[0]
    assert line["status"] == "503", line
    assert line["streamed"] == "true" and "cancelled" not in line, line
    assert int(line["latency_us"]) >= 600_000, line  # the whole stream, not the time to the head
    assert int(line["latency_us"]) <= elapsed * 1e6 + 50_000, (line, elapsed)
    assert line["error"].strip("\"") == "service_unavailable", line
    assert "hi" not in line.get("model", "")  # no prompt text, only the model name


def test_access_log_of_a_client_that_leaves_mid_stream_says_cancelled(gateway, mocks):
    mocks["a"].push({"blocks": [{"text": "A long answer the client will not wait for. " * 20}],
                     "pieces": 8, "chunk_delay_ms": 100})
    r = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=30, json={
        "model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    request_id = r.headers["x-request-id"]
    chunks = r.iter_content(chunk_size=None)
    next(chunks)
    next(chunks)
    r.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while not access_lines(gateway, request_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = access_lines(gateway, request_id)
    assert len(lines) == 1, lines
    assert lines[0]["status"] == "499" and lines[0]["cancelled"] == "true", lines[0]
