"""Identity, policies, limits and usage through real clients: API keys issued by the admin API
and used by the openai SDK (Bearer), the anthropic SDK (x-api-key) and boto3 (the key's SigV4
pair); revoked and expired keys refused in each dialect; IAM-grammar policies deciding per
model and per parameter; a 10 rps / burst 20 key hit by 30 simultaneous calls; usage totals
equal to what the upstream reported. Answers come from the test kit's mock upstream, so the
figures are exact and the calls fast.
"""
import concurrent.futures
import os
import threading
import time

import anthropic
import boto3
import openai
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Server
from test_upstreams import Mock

ADMIN = "mg-test-admin-credential"
SONNET = "anthropic.claude-3-sonnet-20240229-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    config = f"""
[local]
enabled = false

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"

[resilience.retry]
max_attempts = 1

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "{SONNET}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"
finish_cancelled_streams = true

[[models]]
id = "{HAIKU}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[prices."{SONNET}"]
input = 3.0
output = 15.0
"""
    env = {"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "MG_TEST_ADMIN_KEY": ADMIN}
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("identity")), env=env)
    yield server
    server.stop()
    logs = server.logs()
    assert ADMIN not in logs


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def admin(gw, method, path, **kw):
    return requests.request(method, gw.url + path, headers={"Authorization": f"Bearer {ADMIN}"},
                            timeout=10, **kw)


def new_key(gw, **settings):
    r = admin(gw, "POST", "/admin/keys", json=settings)
    assert r.status_code == 201, r.text
    return r.json()


def oai(gw, key):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def bedrock(gw, key_id, secret):
    return boto3.client("bedrock-runtime", endpoint_url=gw.url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))


def converse(client, model=SONNET, **inference):
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}],
                           inferenceConfig=inference or {"maxTokens": 16})


def test_every_door_needs_a_credential(gw):
    with pytest.raises(openai.AuthenticationError):
        oai(gw, "mg_not-a-real-key-at-all-000000000000000000000").chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": "hi"}])
    r = requests.post(gw.url + "/v1/chat/completions", json={"model": SONNET, "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = requests.post(gw.url + "/v1/messages", json={})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = requests.post(gw.url + f"/model/{SONNET}/converse", json={})
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")
    assert requests.get(gw.url + "/admin/keys").status_code == 401
    # Probes stay open.
    assert requests.get(gw.url + "/healthz").status_code == 200


def test_openai_sdk_valid_revoked_and_expired_keys(gw, mock):
    k = new_key(gw, name="ci-openai", team="search")
    assert k["key"].startswith("mg_") and k["status"] == "active"
    client = oai(gw, k["key"])
    r = client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content
    # The secret is never shown again.
    listed = admin(gw, "GET", "/admin/keys?team=search").json()["data"]
    assert [x["id"] for x in listed] == [k["id"]]
    assert "key" not in listed[0] and "hash" not in listed[0] and k["key"] not in str(listed)

    assert admin(gw, "POST", f"/admin/keys/{k['id']}/revoke").json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "hi"}])
    assert "revoked" in str(e.value)

    short = new_key(gw, expires_in="1s")
    oai(gw, short["key"]).models.list()
    time.sleep(1.3)
    with pytest.raises(openai.AuthenticationError) as e:
        oai(gw, short["key"]).chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": "hi"}])
    assert "expired" in str(e.value)


def test_rotation_replaces_the_secret(gw):
    k = new_key(gw)
    rotated = admin(gw, "POST", f"/admin/keys/{k['id']}/rotate").json()
    assert rotated["id"] == k["id"] and rotated["key"] != k["key"]
    with pytest.raises(openai.AuthenticationError):
        oai(gw, k["key"]).chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": "hi"}])
    assert oai(gw, rotated["key"]).chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": "hi"}]).choices


def test_anthropic_sdk_with_x_api_key(gw):
    k = new_key(gw)
    client = anthropic.Anthropic(base_url=gw.url, api_key=k["key"], max_retries=0)
    m = client.messages.create(model=SONNET, max_tokens=16,
                               messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text
    admin(gw, "DELETE", f"/admin/keys/{k['id']}")
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model=SONNET, max_tokens=16,
                               messages=[{"role": "user", "content": "hi"}])


def test_boto3_with_issued_sigv4_credentials(gw):
    k = new_key(gw)
    ok = bedrock(gw, k["access_key_id"], k["secret_access_key"])
    assert converse(ok)["output"]["message"]["content"][0]["text"]
    wrong = bedrock(gw, k["access_key_id"], k["secret_access_key"][:-2] + "xx")
    with pytest.raises(ClientError) as e:
        converse(wrong)
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    unknown = bedrock(gw, "AKMGUNKNOWNUNKNOWN00", k["secret_access_key"])
    with pytest.raises(ClientError) as e:
        converse(unknown)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    admin(gw, "POST", f"/admin/keys/{k['id']}/revoke")
    with pytest.raises(ClientError) as e:
        converse(ok)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


SONNET_ONLY = {"Effect": "Allow", "Action": ["bedrock:InvokeModel"],
               "Resource": ["arn:aws:bedrock:*::foundation-model/anthropic.claude-3-sonnet*"]}
PARAMS = {"Version": "2012-10-17", "Statement": [{
    "Sid": "SmallAndCool", "Effect": "Allow", "Action": ["bedrock:InvokeModel"], "Resource": "*",
    "Condition": {"NumericLessThan": {"bedrock:MaxTokens": "2000"},
                  "NumericLessThanEquals": {"bedrock:Temperature": "0.5"}}}]}


def test_policies_decide_per_model_and_parameter(gw):
    k = new_key(gw, policies=[SONNET_ONLY])
    client = bedrock(gw, k["access_key_id"], k["secret_access_key"])
    assert converse(client, SONNET)["output"]
    with pytest.raises(ClientError) as e:
        converse(client, HAIKU)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "bedrock:InvokeModel" in e.value.response["Error"]["Message"]
    # Streaming is another action, which this policy does not allow.
    with pytest.raises(ClientError) as e:
        client.converse_stream(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"

    p = new_key(gw, policies=[PARAMS])
    client = bedrock(gw, p["access_key_id"], p["secret_access_key"])
    with pytest.raises(ClientError) as e:
        converse(client, SONNET, maxTokens=2000, temperature=0.7)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(ClientError):
        converse(client, SONNET, maxTokens=1999, temperature=0.7)
    assert converse(client, SONNET, maxTokens=1999, temperature=0.5)["output"]
    # The same policy holds at the OpenAI door.
    with pytest.raises(openai.PermissionDeniedError):
        oai(gw, p["key"]).chat.completions.create(
            model=SONNET, max_tokens=2000, temperature=0.5, messages=[{"role": "user", "content": "hi"}])
    # Decisions are audited with the statement that made them.
    # (They are written in batches off the hot path, within a fraction of a second.)
    deadline = time.time() + 10
    while True:
        events = admin(gw, "GET", f"/admin/audit?actor={p['id']}&limit=50").json()["data"]
        if len(events) >= 4 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(events) == 4, events
    assert any(e["decision"] == "allow" and e["statement"] == "SmallAndCool" for e in events)
    assert any(e["decision"] == "deny" and e["statement"] is None for e in events)
    assert all("hi" not in str(e["detail"]) for e in events)


def test_malformed_settings_are_refused_when_saved(gw):
    r = admin(gw, "POST", "/admin/keys", json={"policies": [{"Statement": [{
        "Sid": "Bad", "Effect": "Allow", "Action": "bedrock:InvokeModel",
        "Condition": {"NumericLessThen": {"bedrock:MaxTokens": "1"}}}]}]})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "Bad" in msg and "NumericLessThen" in msg
    r = admin(gw, "POST", "/admin/keys", json={"budgets": [{"name": "b", "limit_usd": 1, "period": "fortnight"}]})
    assert r.status_code == 400 and "fortnight" in r.json()["error"]["message"]
    r = admin(gw, "POST", "/admin/keys", json={"expires_in": "soon"})
    assert r.status_code == 400 and "soon" in r.json()["error"]["message"]
    r = admin(gw, "PUT", "/admin/teams/t1", json={"limits": {"rps": 0}})
    assert r.status_code == 400


def test_a_key_with_10_rps_burst_20_gets_20_of_30_simultaneous_calls(gw):
    limited = new_key(gw, limits={"rps": 10, "burst": 20})
    other = new_key(gw)
    barrier = threading.Barrier(30)

    def call(_):
        barrier.wait()
        return requests.post(gw.url + "/v1/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {limited['key']}"},
                             json={"model": SONNET, "messages": [{"role": "user", "content": "hi"}]})

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(call, range(30)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 20 and codes.count(429) == 10, codes
    for r in answers:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
    # Another key is unaffected, and a limit is never a fallback or an upstream call.
    assert requests.post(gw.url + "/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {other['key']}"},
                         json={"model": SONNET, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    # The Bedrock dialect says ThrottlingException.
    client = bedrock(gw, limited["access_key_id"], limited["secret_access_key"])
    with pytest.raises(ClientError) as e:
        for _ in range(5):
            converse(client)
    assert e.value.response["Error"]["Code"] == "ThrottlingException"


def test_hard_budget_blocks_with_its_name(gw, mock):
    k = new_key(gw, budgets=[{"name": "tiny", "limit_usd": 0.0001, "period": "month"}])
    mock.push({"blocks": [{"text": "expensive"}], "usage": [1000, 100]})
    client = oai(gw, k["key"])
    client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "hi"}])
    # 1000 × $3/M + 100 × $15/M = $0.0045 > $0.0001: once the record is written, calls stop.
    deadline = time.time() + 10
    while True:
        try:
            client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "hi"}])
        except openai.RateLimitError as e:
            assert "tiny" in str(e) and "exhausted" in str(e)
            break
        assert time.time() < deadline, "the budget never blocked"
        time.sleep(0.2)


def test_usage_totals_equal_what_the_upstream_reported(gw, mock):
    k = new_key(gw, team="usage-team")
    client = oai(gw, k["key"])
    reported = [(11, 3), (25, 7), (4, 19), (8, 2)]
    for i, (inp, out) in enumerate(reported):
        mock.push({"blocks": [{"text": f"answer {i}"}], "usage": [inp, out]})
        if i % 2:
            stream = client.chat.completions.create(
                model=SONNET, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "hi"}])
            for _ in stream:
                pass
        else:
            client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": "hi"}])
    # A client that leaves mid-stream: the gateway reads the rest for the provider's figures.
    mock.push({"blocks": [{"text": "one two three four five six seven eight"}], "usage": [40, 12],
               "pieces": 4, "chunk_delay_ms": 100})
    stream = client.chat.completions.create(
        model=SONNET, stream=True, messages=[{"role": "user", "content": "hi"}])
    next(iter(stream))
    stream.close()
    reported.append((40, 12))
    want_in = sum(i for i, _ in reported)
    want_out = sum(o for _, o in reported)
    deadline = time.time() + 10
    while True:
        total = admin(gw, "GET", "/admin/usage?team=usage-team&group_by=key,model").json()
        rows = total["rows"]
        if rows and rows[0]["requests"] == len(reported):
            break
        assert time.time() < deadline, total
        time.sleep(0.2)
    assert len(rows) == 1
    row = rows[0]
    assert (row["key_id"], row["model"]) == (k["id"], SONNET)
    assert (row["input_tokens"], row["output_tokens"]) == (want_in, want_out)
    want_cost = want_in * 3.0 / 1e6 + want_out * 15.0 / 1e6
    assert abs(row["cost_usd"] - want_cost) < 1e-9
