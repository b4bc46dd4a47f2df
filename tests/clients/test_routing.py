"""Routing through the real binary and real clients (openai SDK, boto3, anthropic SDK), with
the test kit's mock upstream saying which model each request reached (the upstream model id
in the bodies it received): virtual models on every door, rules on headers and metadata, a
sticky 10% canary, the decision in headers and invocation records, live changes through the
admin API and the config file — under load — and the metric-based router leaving a mock whose
latency is raised, and coming back when it recovers.
"""
import collections
import json
import math
import threading
import time
import uuid

import anthropic
import boto3
import openai
import pytest
import requests
from botocore.config import Config

from conftest import Server
from test_upstreams import UPSTREAM_ENV, Mock, mock_providers

ADMIN = "mg-test-admin-credential-routing"
ENV = {"MG_TEST_ADMIN_KEY": ADMIN, **UPSTREAM_ENV}
AUTH = {"Authorization": f"Bearer {ADMIN}"}

ROUTERS = """
[[routers]]
name = "support-bot"
aliases = ["anthropic.support-bot-v1:0"]
strategy = "weighted"
sticky = "user"
targets = [{ model = "small", weight = 90, arm = "control" },
           { model = "candidate", weight = 10, arm = "canary" }]

[[routers.rules]]
name = "wants-quality"
header = { "x-model-preference" = "quality" }
model = "large"

[[routers.rules]]
name = "complex"
metadata = { complexity = "high" }
model = "large"

[[routers]]
name = "json-bot"
strategy = "cascade"
[routers.cascade]
models = ["small", "large"]
validator = { kind = "json", required = ["answer"] }
"""


def config(mock, routers=ROUTERS):
    return f"""
[local]
enabled = false

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"

[routing]
watch_interval = "200ms"

[invocations]
enabled = true

[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

{mock_providers(mock)}
[[models]]
id = "small"
provider = "mock-openai"
upstream_id = "up-small"

[[models]]
id = "large"
provider = "mock-openai"
upstream_id = "up-large"

[[models]]
id = "candidate"
provider = "mock-anthropic"
upstream_id = "up-candidate"

{routers}
"""


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    server = Server(config_text=config(mock), tmp_path=str(tmp_path_factory.mktemp("routing")),
                    env=ENV)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def upstream_models(mock):
    """How many requests reached each upstream model."""
    return collections.Counter(r["body"].get("model") for r in mock.requests())


def oai(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN, max_retries=0)


def route_header(headers):
    return dict(part.split("=", 1) for part in headers["x-modelgate-route"].split("; "))


def admin(gw, method, path, **kw):
    return requests.request(method, gw.url + path, headers=AUTH, timeout=30, **kw)


def test_a_virtual_model_is_listed_and_served_through_every_door(gw, mock):
    ids = [m.id for m in oai(gw).models.list().data]
    assert "support-bot" in ids and "small" in ids
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "hi"}], user="alice")
    route = route_header(raw.headers)
    assert route["router"] == "support-bot" and route["strategy"] == "weighted"
    assert route["arm"] in ("control", "canary")
    served = {"control": "up-small", "canary": "up-candidate"}[route["arm"]]
    assert upstream_models(mock) == {served: 1}
    assert raw.headers["x-modelgate-served-by"] == route["model"]

    # A header rule, through the openai SDK.
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-model-preference": "quality"})
    assert route_header(raw.headers)["rule"] == "wants-quality"
    assert upstream_models(mock)["up-large"] == 1

    # A metadata rule, through boto3 Converse (requestMetadata) under the virtual model's
    # Bedrock-style alias.
    key = admin(gw, "POST", "/admin/keys", json={"name": "boto3"}).json()
    br = boto3.client("bedrock-runtime", endpoint_url=gw.url, region_name="us-east-1",
                      aws_access_key_id=key["access_key_id"],
                      aws_secret_access_key=key["secret_access_key"],
                      config=Config(retries={"total_max_attempts": 1}))
    out = br.converse(modelId="anthropic.support-bot-v1:0",
                      messages=[{"role": "user", "content": [{"text": "hi"}]}],
                      requestMetadata={"complexity": "high"})
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-modelgate-route"].count("rule=complex") == 1
    assert upstream_models(mock)["up-large"] == 2

    # The anthropic SDK: metadata.user_id keeps the user on one arm.
    client = anthropic.Anthropic(base_url=gw.url, api_key=ADMIN, max_retries=0)
    arms = set()
    for _ in range(5):
        raw = client.messages.with_raw_response.create(
            model="support-bot", max_tokens=20, metadata={"user_id": "carol"},
            messages=[{"role": "user", "content": "hi"}])
        arms.add(route_header(raw.headers)["arm"])
    assert len(arms) == 1


def test_a_cascade_escalates_through_the_openai_sdk_whole_and_streamed(gw, mock):
    client = oai(gw)
    # small answers prose: not the JSON asked for, so large answers.
    mock.push({"blocks": [{"text": "Sure! The answer is 42."}], "usage": [12, 6]},
              {"blocks": [{"text": '{"answer": 42}'}], "usage": [12, 5]})
    raw = client.chat.completions.with_raw_response.create(
        model="json-bot", messages=[{"role": "user", "content": "answer in JSON"}])
    assert [r["body"]["model"] for r in mock.requests()] == ["up-small", "up-large"]
    route = route_header(raw.headers)
    assert route["cascade"] == "small>large" and route["model"] == "large"
    assert raw.parse().choices[0].message.content == '{"answer": 42}'
    # small answers valid JSON: it is returned, streamed, and large is never asked.
    mock.reset()
    mock.push({"blocks": [{"text": '{"answer": 7}'}], "usage": [12, 5]})
    stream = client.chat.completions.with_raw_response.create(
        model="json-bot", messages=[{"role": "user", "content": "answer in JSON"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert text == '{"answer": 7}'
    assert [r["body"]["model"] for r in mock.requests()] == ["up-small"]
    assert route_header(stream.headers)["model"] == "small"
    # Streamed and escalated: large streams its own answer.
    mock.reset()
    mock.push({"blocks": [{"text": "no json here"}]},
              {"blocks": [{"text": '{"answer": 8}'}], "pieces": 4})
    stream = client.chat.completions.create(
        model="json-bot", messages=[{"role": "user", "content": "answer in JSON"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == '{"answer": 8}'
    bodies = [r["body"] for r in mock.requests()]
    assert [b["model"] for b in bodies] == ["up-small", "up-large"]
    assert not bodies[0].get("stream") and bodies[1].get("stream")


def test_a_sticky_ten_percent_canary_over_http(gw, mock):
    client = oai(gw)
    arms = {}
    n = 400
    for u in range(n):
        raw = client.chat.completions.with_raw_response.create(
            model="support-bot", messages=[{"role": "user", "content": "hi"}], user=f"u-{u}")
        arms[u] = route_header(raw.headers)["arm"]
    counts = upstream_models(mock)
    canary = counts["up-candidate"]
    assert counts["up-small"] + canary == n
    assert sum(1 for a in arms.values() if a == "canary") == canary
    # The 99% binomial interval of 400 draws at 10%: 40 ± 2.576·√(400·0.1·0.9).
    half = 2.576 * math.sqrt(n * 0.1 * 0.9)
    assert 40 - half <= canary <= 40 + half, canary
    # Each user stays on its arm.
    for u in range(0, n, 40):
        raw = client.chat.completions.with_raw_response.create(
            model="support-bot", messages=[{"role": "user", "content": "again"}], user=f"u-{u}")
        assert route_header(raw.headers)["arm"] == arms[u]


def test_the_decision_is_in_the_invocation_record_and_metrics(gw, mock):
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-model-preference": "quality"})
    rid = raw.headers["x-request-id"]
    record = None
    for _ in range(50):
        r = admin(gw, "GET", f"/admin/invocations?request_id={rid}")
        data = r.json()["data"]
        if data:
            record = data[0]
            break
        time.sleep(0.1)
    assert record is not None
    assert record["model_requested"] == "support-bot" and record["model_served"] == "large"
    assert record["routing"]["router"] == "support-bot"
    assert record["routing"]["rule"] == "wants-quality"
    metrics = requests.get(gw.url + "/metrics", headers=AUTH, timeout=10).text
    assert 'modelgate_routing_decisions_total{router="support-bot",strategy="rule",' \
           'rule="wants-quality",model="large",arm="large"}' in metrics


def test_admin_changes_are_validated_versioned_and_rolled_back(gw, mock):
    before = admin(gw, "GET", "/admin/routing").json()
    v0 = before["version"]
    bad = {"routers": [{"name": "support-bot", "targets": [{"model": "no-such-model"}]}]}
    r = admin(gw, "PUT", "/admin/routing", json=bad)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_routing"
    assert "routers[0].targets[0].model" in err["message"] and "no-such-model" in err["message"]
    r = admin(gw, "PUT", "/admin/routing", json={"routers": [{"name": "x", "strategyy": "first"}]})
    assert r.status_code == 400 and "strategyy" in r.json()["error"]["message"]
    assert admin(gw, "GET", "/admin/routing").json()["version"] == v0

    new = {"routers": [{"name": "support-bot", "targets": [{"model": "large"}]}],
           "note": "all traffic to large"}
    r = admin(gw, "PUT", "/admin/routing", json=new)
    assert r.status_code == 200, r.text
    v1 = r.json()["version"]
    assert v1 == v0 + 1 and r.json()["author"] == "admin"
    oai(gw).chat.completions.create(model="support-bot",
                                    messages=[{"role": "user", "content": "hi"}], user="u-1")
    assert upstream_models(mock) == {"up-large": 1}
    versions = admin(gw, "GET", "/admin/routing/versions").json()["data"]
    assert versions[0]["version"] == v1 and versions[0]["note"] == "all traffic to large"

    r = admin(gw, "POST", "/admin/routing/rollback", json={"version": v0})
    assert r.status_code == 200, r.text
    assert r.json()["note"] == f"rollback to version {v0}"
    mock.reset()
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-model-preference": "quality"})
    assert route_header(raw.headers)["rule"] == "wants-quality"
    assert admin(gw, "POST", "/admin/routing/rollback", json={"version": 9999}).status_code == 404
    # Not for every caller: a key without admin rights is refused.
    key = admin(gw, "POST", "/admin/keys", json={"name": "plain"}).json()["key"]
    r = requests.put(gw.url + "/admin/routing", json=new,
                     headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 403


def test_an_edited_config_file_applies_live_and_a_broken_edit_changes_nothing(mock, tmp_path):
    server = Server(config_text=config(mock), tmp_path=str(tmp_path), env=ENV)
    try:
        client = oai(server)
        edited = ROUTERS.replace('model = "large"', 'model = "candidate"')
        with open(server.config_path, "w") as f:
            f.write(config(mock, edited))
        deadline = time.time() + 10
        while time.time() < deadline:
            raw = client.chat.completions.with_raw_response.create(
                model="support-bot", messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-model-preference": "quality"})
            if raw.headers["x-modelgate-served-by"] == "candidate":
                break
            time.sleep(0.2)
        else:
            pytest.fail("the edited routers never applied")
        status = admin(server, "GET", "/admin/routing").json()
        versions = admin(server, "GET", "/admin/routing/versions").json()["data"]
        assert versions[0]["author"].startswith("file:") and status["version"] == 2
        # A broken edit: logged, routing unchanged.
        with open(server.config_path, "w") as f:
            f.write(config(mock, edited.replace('model = "candidate"', 'model = "ghost"')))
        time.sleep(1.5)
        assert admin(server, "GET", "/admin/routing").json()["version"] == 2
        assert "ghost" in server.logs()
        raw = client.chat.completions.with_raw_response.create(
            model="support-bot", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-model-preference": "quality"})
        assert raw.headers["x-modelgate-served-by"] == "candidate"
    finally:
        server.stop()
    # A restart keeps the file's routers (the stored version matches the file).
    server = Server(config_text=config(mock, edited), tmp_path=str(tmp_path), env=ENV)
    try:
        assert admin(server, "GET", "/admin/routing").json()["version"] >= 1
    finally:
        server.stop()


def test_changes_under_load_fail_no_request(gw, mock):
    """Hundreds of requests per second for 10 s while the routing flips every 200 ms: every
    request answers 200, and the model that served it is the one its version routes to."""
    a = {"routers": [{"name": "flip", "targets": [{"model": "small"}]}]}
    b = {"routers": [{"name": "flip", "targets": [{"model": "large"}]}]}
    assert admin(gw, "PUT", "/admin/routing", json=a).status_code == 200
    start_version = admin(gw, "GET", "/admin/routing").json()["version"]
    stop = threading.Event()
    results = collections.Counter()
    mismatches = []
    lock = threading.Lock()

    def worker():
        s = requests.Session()
        body = {"model": "flip", "messages": [{"role": "user", "content": "hi"}]}
        while not stop.is_set():
            r = s.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
            with lock:
                results[r.status_code] += 1
                if r.status_code == 200:
                    v = int(route_header(r.headers)["version"])
                    want = "small" if (v - start_version) % 2 == 0 else "large"
                    if r.headers["x-modelgate-served-by"] != want:
                        mismatches.append((v, r.headers["x-modelgate-served-by"]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    t0 = time.time()
    for t in threads:
        t.start()
    flips = 0
    while time.time() - t0 < 10:
        time.sleep(0.2)
        flips += 1
        r = admin(gw, "PUT", "/admin/routing", json=b if flips % 2 else a)
        assert r.status_code == 200, r.text
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    total = sum(results.values())
    print(f"{total} requests in {elapsed:.1f}s ({total / elapsed:.0f}/s), {flips} changes")
    assert results == {200: total}, results
    assert not mismatches, mismatches[:5]
    assert total / elapsed >= 100, f"only {total / elapsed:.0f} requests/s"


def test_the_metric_router_leaves_a_slow_upstream_and_returns_when_it_recovers(tmp_path):
    fast_mock, slow_mock = Mock(), Mock()
    routers = """
[routing]
decay = "200ms"
watch_interval = "0s"

[[providers]]
name = "east"
type = "openai"
base_url = "EAST/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[providers]]
name = "west"
type = "openai"
base_url = "WEST/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "east-model"
provider = "east"
upstream_id = "up-east"

[[models]]
id = "west-model"
provider = "west"
upstream_id = "up-west"

[[routers]]
name = "lb"
strategy = "least_latency"
targets = [{ model = "east-model" }, { model = "west-model" }]
""".replace("EAST", fast_mock.url).replace("WEST", slow_mock.url)
    text = f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false
{routers}
"""
    server = Server(config_text=text, tmp_path=str(tmp_path), env=ENV)
    try:
        s = requests.Session()

        def ask(n, model="lb"):
            for _ in range(n):
                r = s.post(server.url + "/v1/chat/completions", timeout=30,
                           json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text

        # Both upstreams' connections open (the first request to each is slower, and peak
        # EWMA remembers peaks), then five decay periods so neither carries that first peak.
        ask(5, "east-model")
        ask(5, "west-model")
        time.sleep(1)
        mocks = {"east-model": fast_mock, "west-model": slow_mock}

        def shares(n):
            before = {m: k.calls() for m, k in mocks.items()}
            ask(n)
            return {m: k.calls() - before[m] for m, k in mocks.items()}

        # Two equal upstreams: least latency sends most traffic to whichever answers a little
        # faster. That one's latency is raised to 300 ms.
        baseline = shares(60)
        busiest = max(baseline, key=baseline.get)
        assert baseline[busiest] >= 30, baseline
        slow = {"blocks": [{"text": "slow"}], "first_byte_delay_ms": 300}
        requests.post(mocks[busiest].url + "/_mock/default", json=slow, timeout=5).raise_for_status()
        during = shares(60)
        assert during[busiest] <= 6, f"the slowed upstream still got {during} of 60"
        # It recovers; after the estimates have decayed, traffic comes back to it.
        requests.post(mocks[busiest].url + "/_mock/default", timeout=5,
                      json={"blocks": [{"text": "fast again"}]}).raise_for_status()
        time.sleep(2)
        after = shares(60)
        assert after[busiest] >= 5, f"the recovered upstream got {after} of 60"
        print(f"least latency: baseline {baseline}, slowed {during}, recovered {after}")
        stats = admin_stats(server)
        # The router's statistics count every call the model served: the five warm-up calls
        # plus its share of each round (not a fixed number: how the shares fall varies).
        served = 5 + baseline[busiest] + during[busiest] + after[busiest]
        assert stats[busiest]["calls"] == served, (stats[busiest], served)
        assert stats[busiest]["in_flight"] == 0
    finally:
        server.stop()
        fast_mock.stop()
        slow_mock.stop()


def admin_stats(server):
    return requests.get(server.url + "/admin/routing/stats", timeout=10).json()["models"]
