"""Declarative endpoints and governed prompt templates through real clients.

The seeds' `POST /generate {prompt, use_case}` → `{model_used, response}` made from config:
request validation listing every failing field, the model picked per use case and moved by
editing the running config file, the degradation text when every model fails, large inputs
answered 202 with a job; the endpoints' OpenAPI document fuzzed by schemathesis; a prompt's
lifecycle (author → reviewer → publisher, with the comparison of two versions on publish) and
its audit; boto3's `bedrock-agent` client creating a prompt and a version that boto3's
`bedrock-runtime` `converse` runs on the embedded model with `promptVariables`.

Endpoint answers come from the test kit's mock upstream (an echo), so they are exact and fast.
"""
import json
import os
import re
import subprocess
import sys
import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Server, binary
from test_identity import ADMIN, admin, new_key
from test_upstreams import Mock

EMBEDDED = "local.smollm2-135m-instruct"
APOLOGY = "We're sorry, the assistant is unavailable right now. Please try again later."


def config(mock, product_model="m-product"):
    return f"""
[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"

[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

[routing]
watch_interval = "200ms"

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "m-general"
provider = "mock-openai"
upstream_id = "up-general"

[[models]]
id = "m-product"
provider = "mock-openai"
upstream_id = "up-product"

[[models]]
id = "m-alt"
provider = "mock-openai"
upstream_id = "up-alt"

[[endpoints]]
name = "generate"
path = "/generate"
description = "The assistant: a question and its use case"
request_schema = {{ type = "object", required = ["prompt"], additionalProperties = false, properties = {{ prompt = {{ type = "string", minLength = 1, maxLength = 20000 }}, use_case = {{ type = "string", default = "general", maxLength = 64 }} }} }}
variables = {{ question = "prompt" }}
template = {{ system = "You are a helpful financial assistant.", user = "{{{{ question }}}}", max_tokens = 64 }}
model = "m-general"
model_field = "use_case"
use_case_models = {{ general = "m-general", product_question = "{product_model}" }}
async_over_chars = 10000
timeout = "30s"
degradation = {{ account_inquiry = "Our systems are busy. For account questions call 1-800-555-1234." }}

[[endpoints]]
name = "summarise"
path = "/ai/summarise"
request_schema = {{ type = "object", required = ["document"], additionalProperties = false, properties = {{ document = {{ type = "object", required = ["title", "text"], properties = {{ title = {{ type = "string", maxLength = 200 }}, text = {{ type = "string", maxLength = 5000 }} }} }}, words = {{ type = "integer", minimum = 5, maximum = 200, default = 50 }} }} }}
variables = {{ title = "/document/title", text = "/document/text", words = "words" }}
template = {{ user = "Summarise '{{{{ title }}}}' in {{{{ words }}}} words: {{{{ text }}}}" }}
model = "m-general"
rate_limit = {{ rps = 50, burst = 100 }}

[[endpoints]]
name = "support-reply"
path = "/support/reply"
request_schema = {{ type = "object", required = ["customer_name", "issue"], additionalProperties = false, properties = {{ customer_name = {{ type = "string", maxLength = 100 }}, issue = {{ type = "string", maxLength = 2000 }} }} }}
prompt = "support-reply"
"""


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    env = {"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "MG_TEST_ADMIN_KEY": ADMIN}
    server = Server(config_text=config(mock), tmp_path=str(tmp_path_factory.mktemp("endpoints")),
                    env=env)
    yield server
    server.stop()
    assert server.proc.returncode == 0, server.logs()[-3000:]


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def allow(*actions):
    return {"Effect": "Allow", "Action": list(actions), "Resource": "*"}


@pytest.fixture(scope="module")
def app_key(gw):
    return new_key(gw, name="frontend",
                   policies=[allow("modelgate:InvokeEndpoint", "bedrock:InvokeModel")])["key"]


def call(gw, key, path, body, method="POST"):
    return requests.request(method, gw.url + path, json=body, timeout=60,
                            headers={"Authorization": f"Bearer {key}"})


def upstream_models(mock):
    return [r["body"].get("model") for r in mock.requests() if "model" in r.get("body", {})]


def test_generate_answers_with_the_use_case_model(gw, mock, app_key):
    r = call(gw, app_key, "/generate", {"prompt": "What is a 401(k)?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model_used", "response"}
    assert body["model_used"] == "m-general"
    # The mock echoes the rendered user message, so the template and mapping are seen.
    assert "What is a 401(k)?" in body["response"]
    sent = mock.requests()[-1]["body"]
    assert sent["model"] == "up-general"
    assert sent["messages"][0] == {"role": "system",
                                  "content": "You are a helpful financial assistant."}
    assert sent["max_tokens"] == 64 or sent.get("max_completion_tokens") == 64

    r = call(gw, app_key, "/generate", {"prompt": "Which fund?", "use_case": "product_question"})
    assert r.status_code == 200 and r.json()["model_used"] == "m-product"
    # An unknown use case gets the default model.
    r = call(gw, app_key, "/generate", {"prompt": "Hi", "use_case": "weather"})
    assert r.json()["model_used"] == "m-general"
    assert upstream_models(mock) == ["up-general", "up-product", "up-general"]


def test_bad_requests_name_every_failing_field(gw, app_key):
    r = call(gw, app_key, "/generate", {"prompt": "", "use_case": 7, "colour": "red"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_request_body"
    for path in ("/prompt", "/use_case", "colour"):
        assert path in err["message"], err["message"]
    r = call(gw, app_key, "/ai/summarise", {"document": {"title": "t"}, "words": 1})
    assert r.status_code == 400
    assert "/document" in r.json()["error"]["message"] and "/words" in r.json()["error"]["message"]
    r = requests.post(gw.url + "/generate", data=b"{not json", timeout=10,
                      headers={"Authorization": f"Bearer {app_key}"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    assert call(gw, app_key, "/no/such/endpoint", {}).status_code == 404
    r = call(gw, app_key, "/generate", None, method="GET")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    # Unauthenticated and unauthorised callers are refused before any model runs.
    assert requests.post(gw.url + "/generate", json={"prompt": "x"}, timeout=10).status_code == 401
    other = new_key(gw, name="models-only", policies=[allow("bedrock:InvokeModel")])["key"]
    assert call(gw, other, "/generate", {"prompt": "x"}).status_code == 403


def test_a_config_edit_moves_the_next_call_without_a_restart(gw, mock, app_key):
    pid = gw.proc.pid
    with open(gw.config_path, "w") as f:
        f.write(config(mock, product_model="m-alt"))
    deadline = time.time() + 15
    used = None
    while time.time() < deadline:
        r = call(gw, app_key, "/generate", {"prompt": "Fees?", "use_case": "product_question"})
        assert r.status_code == 200, r.text
        used = r.json()["model_used"]
        if used == "m-alt":
            break
        time.sleep(0.2)
    assert used == "m-alt"
    assert gw.proc.pid == pid and gw.proc.poll() is None
    assert "config file's endpoints in force" in gw.logs()
    with open(gw.config_path, "w") as f:
        f.write(config(mock))


def test_every_model_failing_degrades_per_use_case(gw, mock, app_key):
    # Every upstream call fails with a 503 (until the next test's reset).
    requests.post(mock.url + "/_mock/faults", json={"rate": 1.0}, timeout=5).raise_for_status()
    r = call(gw, app_key, "/generate", {"prompt": "My balance?", "use_case": "account_inquiry"})
    assert r.status_code == 200, r.text
    assert r.json()["model_used"] == "degraded"
    assert "1-800-555-1234" in r.json()["response"]
    assert r.headers["x-modelgate-degraded"] == "true"
    r = call(gw, app_key, "/generate", {"prompt": "Hello?", "use_case": "unknown"})
    assert r.status_code == 200 and r.json()["response"] == APOLOGY
    # An endpoint without degradation texts answers the failure as an error.
    r = call(gw, app_key, "/ai/summarise", {"document": {"title": "t", "text": "x"}})
    assert r.status_code == 503, r.text


def test_a_large_input_runs_as_a_job(gw, mock, app_key):
    text = "Please review this long document. " * 360
    assert len(text) > 12_000
    r = call(gw, app_key, "/generate", {"prompt": text})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    deadline = time.time() + 60
    while time.time() < deadline:
        j = call(gw, app_key, f"/v1/jobs/{job['id']}", None, method="GET").json()
        if j["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.3)
    assert j["status"] == "succeeded", j
    assert j["result"]["status"] == 200
    result = j["result"]["body"]
    assert result["model_used"] == "m-general"
    assert "long document" in result["response"]


def test_endpoints_made_through_the_admin_api(gw, mock, app_key):
    faq = {"name": "faq", "path": "/faq", "description": "Answers FAQ questions",
           "request_schema": {"type": "object", "required": ["q"],
                              "properties": {"q": {"type": "string", "maxLength": 500}}},
           "template": {"system": "Answer briefly.", "user": "FAQ: {{ q }}"},
           "model": "m-product", "timeout": "10s"}
    r = admin(gw, "PUT", "/admin/declared-endpoints/faq", json=faq)
    assert r.status_code == 200, r.text
    r = call(gw, app_key, "/faq", {"q": "opening hours?"})
    assert r.status_code == 200, r.text
    assert r.json()["model_used"] == "m-product" and r.json()["response"].endswith("FAQ: opening hours?")
    listed = admin(gw, "GET", "/admin/declared-endpoints").json()
    sources = {e["endpoint"]["name"]: e["source"] for e in listed["endpoints"]}
    assert sources == {"generate": "file", "summarise": "file", "support-reply": "file", "faq": "api"}
    version = listed["stored_version"]
    # A bad definition, or one that takes a file endpoint's name or path, is refused whole.
    bad = dict(faq, template={"user": "{{ q }} {{ nope }}"})
    r = admin(gw, "PUT", "/admin/declared-endpoints/faq", json=bad)
    assert r.status_code == 400 and "'nope'" in r.json()["error"]["message"]
    r = admin(gw, "PUT", "/admin/declared-endpoints/generate", json=dict(faq, name="generate"))
    assert r.status_code == 400 and "config file" in r.json()["error"]["message"]
    r = admin(gw, "PUT", "/admin/declared-endpoints/faq2",
              json=dict(faq, name="faq2", path="/generate"))
    assert r.status_code == 400 and "/generate" in r.json()["error"]["message"]
    assert admin(gw, "GET", "/admin/declared-endpoints").json()["stored_version"] == version
    assert call(gw, app_key, "/faq", {"q": "still?"}).status_code == 200
    # Keys with policies need the admin actions.
    assert call(gw, app_key, "/admin/declared-endpoints/faq", faq, method="PUT").status_code == 403
    # The endpoint's own rate limit, shared by its callers: 1 per second, no burst.
    limited = dict(faq, rate_limit={"rps": 1, "burst": 1})
    assert admin(gw, "PUT", "/admin/declared-endpoints/faq", json=limited).status_code == 200
    statuses = [call(gw, app_key, "/faq", {"q": f"n{i}"}).status_code for i in range(4)]
    assert statuses[0] == 200 and 429 in statuses, statuses
    r = call(gw, app_key, "/faq", {"q": "again"})
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and "retry-after" in r.headers
    r = admin(gw, "DELETE", "/admin/declared-endpoints/faq")
    assert r.status_code == 200 and r.json()["stored_version"] == version + 2
    assert call(gw, app_key, "/faq", {"q": "gone?"}).status_code == 404
    assert admin(gw, "DELETE", "/admin/declared-endpoints/faq").status_code == 404


# ---- Prompts ----

SUPPORT = {
    "name": "support-reply",
    "description": "First answer to a support ticket",
    "variants": [{
        "name": "main", "templateType": "CHAT", "modelId": "m-general",
        "templateConfiguration": {"chat": {
            "system": [{"text": "You answer support tickets politely."}],
            "messages": [{"role": "user", "content": [
                {"text": "Customer {{customer_name}} writes: {{issue}}"}]}],
            "inputVariables": [{"name": "customer_name"}, {"name": "issue"}],
        }},
        "inferenceConfiguration": {"text": {"maxTokens": 64, "temperature": 0.2}},
    }],
}


def agent(gw, key):
    return boto3.client("bedrock-agent", endpoint_url=gw.url, region_name="us-east-1",
                        aws_access_key_id=key["access_key_id"],
                        aws_secret_access_key=key["secret_access_key"],
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture(scope="module")
def people(gw):
    author = new_key(gw, name="author", policies=[allow(
        "bedrock:CreatePrompt", "bedrock:UpdatePrompt", "bedrock:GetPrompt", "bedrock:ListPrompts",
        "bedrock:CreatePromptVersion", "bedrock:DeletePrompt", "modelgate:SubmitPrompt",
        "modelgate:RenderPrompt")])
    reviewer = new_key(gw, name="reviewer", policies=[allow(
        "bedrock:GetPrompt", "modelgate:ApprovePrompt", "modelgate:RejectPrompt",
        "modelgate:SubmitPrompt")])
    return {"author": author, "reviewer": reviewer}


def step(gw, key, pid, version, what, **body):
    return requests.post(f"{gw.url}/admin/prompts/{pid}/versions/{version}/{what}", json=body,
                         headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_prompt_lifecycle_comparison_and_audit(gw, mock, app_key, people):
    author, reviewer = people["author"], people["reviewer"]
    client = agent(gw, author)
    body = json.loads(json.dumps(SUPPORT))
    body["modelgate"] = {
        "examples": [{"name": "refund", "variables": {"customer_name": "Ana", "issue": "refund"}},
                     {"name": "late", "variables": {"customer_name": "Bo", "issue": "late parcel"}}],
        "thresholds": {"min_similarity": 0.6, "max_error_rate": 0},
    }
    r = requests.post(gw.url + "/prompts/", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {author['key']}"})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    v1 = client.create_prompt_version(promptIdentifier=pid)
    assert v1["version"] == "1" and v1["arn"].endswith(f":prompt/{pid}:1")

    # Before publishing, the endpoint that runs the published version has nothing to run.
    assert call(gw, app_key, "/support/reply", {"customer_name": "A", "issue": "b"}).status_code == 404
    # Publishing needs approval; the author cannot approve (policy); a reviewer can.
    assert step(gw, author["key"], pid, 1, "publish").status_code == 403
    assert step(gw, ADMIN, pid, 1, "publish").status_code == 400
    assert step(gw, author["key"], pid, 1, "submit", note="first draft").status_code == 200
    assert step(gw, author["key"], pid, 1, "approve").status_code == 403
    r = step(gw, reviewer["key"], pid, 1, "approve", note="reads well")
    assert r.status_code == 200 and r.json()["state"] == "approved", r.text
    r = step(gw, ADMIN, pid, 1, "publish")
    assert r.status_code == 200 and r.json()["state"] == "published", r.text

    r = call(gw, app_key, "/support/reply", {"customer_name": "Ana", "issue": "my refund"})
    assert r.status_code == 200, r.text
    assert r.json()["response"].endswith("Customer Ana writes: my refund")

    # v2: a small wording change; a reviewer may not approve what they submitted themselves.
    body["variants"][0]["templateConfiguration"]["chat"]["messages"][0]["content"][0]["text"] = \
        "Customer {{customer_name}} wrote: {{issue}}"
    body.pop("description")
    client.update_prompt(promptIdentifier=pid, **{k: v for k, v in body.items() if k != "modelgate"})
    r = requests.put(f"{gw.url}/prompts/{pid}/", json=body, timeout=10,
                     headers={"Authorization": f"Bearer {author['key']}"})
    assert r.status_code == 200, r.text
    assert client.create_prompt_version(promptIdentifier=pid)["version"] == "2"
    assert step(gw, reviewer["key"], pid, 2, "submit").status_code == 200
    r = step(gw, reviewer["key"], pid, 2, "approve")
    assert r.status_code == 400 and "different reviewer" in r.json()["error"]["message"]
    assert step(gw, ADMIN, pid, 2, "approve").status_code == 200
    mock.reset()
    r = step(gw, ADMIN, pid, 2, "publish")
    assert r.status_code == 200, r.text
    report = r.json()["comparison"]
    assert report["old_version"] == 1 and report["new_version"] == 2 and report["passed"]
    assert [row["example"] for row in report["rows"]] == ["refund", "late"]
    assert 0.6 < report["mean_similarity"] < 1.0
    assert len(mock.requests()) == 4  # 2 examples × 2 versions

    # v3 drifts too far: the comparison refuses the publish, and `prompts test` fails in CI.
    body["variants"][0]["templateConfiguration"]["chat"]["messages"][0]["content"][0]["text"] = \
        "Reply in French to {{customer_name}} about {{issue}} with many extra words added here"
    requests.put(f"{gw.url}/prompts/{pid}/", json=body, timeout=10,
                 headers={"Authorization": f"Bearer {author['key']}"}).raise_for_status()
    client.create_prompt_version(promptIdentifier=pid)
    step(gw, author["key"], pid, 3, "submit").raise_for_status()
    step(gw, reviewer["key"], pid, 3, "approve").raise_for_status()
    r = step(gw, ADMIN, pid, 3, "publish")
    assert r.status_code == 400 and r.json()["error"]["code"] == "comparison_failed", r.text
    cli = [binary(), "prompts", "test", "support-reply", "--url", gw.url, "--api-key", ADMIN]
    bad = subprocess.run(cli + ["--version", "3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "FAILED" in bad.stdout, bad.stdout + bad.stderr
    assert "SIMILARITY" in bad.stdout and "refund" in bad.stdout
    good = subprocess.run(cli + ["--version", "2", "--against", "1"], capture_output=True,
                          text=True, timeout=120)
    assert good.returncode == 0 and "PASSED" in good.stdout, good.stdout + good.stderr

    # An A/B split between the published version and v1, recorded per call.
    r = admin(gw, "PUT", f"/admin/prompts/{pid}/labels",
              json={"label": "published", "version": 2, "split": {"version": 1, "weight": 0.5}})
    assert r.status_code == 200, r.text
    for i in range(16):
        call(gw, app_key, "/support/reply", {"customer_name": f"C{i}", "issue": "x"}).raise_for_status()

    # The audit: who used which version, when, through what.
    time.sleep(1.0)
    uses = admin(gw, "GET", f"/admin/prompts/{pid}/renders?limit=1000").json()["renders"]
    endpoint_uses = [u for u in uses if u["source"] == "endpoint:support-reply"]
    assert len(endpoint_uses) == 17
    assert {u["version"] for u in endpoint_uses} == {1, 2}
    assert all(u["caller"] and u["status"] == 200 and u["ts_ms"] > 0 for u in endpoint_uses)
    assert any(u["source"] == "test" for u in uses)
    stats = admin(gw, "GET", f"/admin/prompts/{pid}/stats").json()["versions"]
    assert {s["version"] for s in stats} >= {"1", "2"}
    trail = admin(gw, "GET", f"/admin/prompts/{pid}/reviews").json()
    steps = [(t["version"], t["state"]) for t in trail["reviews"]]
    assert steps[:4] == [(1, "submitted"), (1, "approved"), (1, "published"), (2, "submitted")]
    assert trail["states"]["3"] == "approved" and trail["labels"]["published"]["version"] == 2
    actors = {t["actor"] for t in trail["reviews"]}
    assert len(actors) == 3  # author, reviewer, admin

    # The command line reads the same.
    base = [binary(), "prompts"]
    remote = ["--url", gw.url, "--api-key", ADMIN]
    listed = subprocess.run(base + ["list"] + remote, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "support-reply" in listed.stdout and pid in listed.stdout
    rendered = subprocess.run(
        base + ["render", "support-reply", "--label", "published", "--var", "customer_name=Zoe",
                "--var", "issue=lost card"] + remote, capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    out = json.loads(rendered.stdout)
    assert out["modelId"] == "m-general" and out["version"] in (1, 2)
    assert "Zoe" in json.dumps(out["messages"]) and "lost card" in json.dumps(out["messages"])
    missing = subprocess.run(base + ["render", "support-reply", "--version", "2", "--var",
                                     "customer_name=Zoe"] + remote,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "'issue'" in missing.stderr


def test_boto3_prompt_version_runs_through_converse(gw, people):
    author = people["author"]
    client = agent(gw, author)
    created = client.create_prompt(
        name="greeter", description="Greets",
        variants=[{"name": "v", "templateType": "TEXT", "modelId": EMBEDDED,
                   "templateConfiguration": {"text": {
                       "text": "Say hello to {{person}} in one short sentence.",
                       "inputVariables": [{"name": "person"}]}},
                   "inferenceConfiguration": {"text": {"maxTokens": 16, "temperature": 0}}}])
    assert created["version"] == "DRAFT" and len(created["id"]) == 10
    got = client.get_prompt(promptIdentifier=created["id"])
    assert got["variants"][0]["templateConfiguration"]["text"]["inputVariables"] == [{"name": "person"}]
    listed = client.list_prompts()["promptSummaries"]
    assert any(p["id"] == created["id"] for p in listed)
    version = client.create_prompt_version(promptIdentifier=created["id"], description="v1")
    # Running a managed prompt needs bedrock:RenderPrompt, as on AWS.
    models_only = new_key(gw, name="models", policies=[allow("bedrock:InvokeModel")])
    denied = boto3.client("bedrock-runtime", endpoint_url=gw.url, region_name="us-east-1",
                          aws_access_key_id=models_only["access_key_id"],
                          aws_secret_access_key=models_only["secret_access_key"])
    with pytest.raises(ClientError) as e:
        denied.converse(modelId=version["arn"], promptVariables={"person": {"text": "Ana"}})
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    caller = new_key(gw, name="runner",
                     policies=[allow("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream",
                                     "bedrock:RenderPrompt")])
    runtime = boto3.client("bedrock-runtime", endpoint_url=gw.url, region_name="us-east-1",
                           aws_access_key_id=caller["access_key_id"],
                           aws_secret_access_key=caller["secret_access_key"],
                           config=Config(retries={"total_max_attempts": 1}))
    out = runtime.converse(modelId=version["arn"], promptVariables={"person": {"text": "Ana"}})
    text = out["output"]["message"]["content"][0]["text"]
    assert text.strip(), out
    assert out["usage"]["outputTokens"] <= 16
    stream = runtime.converse_stream(modelId=version["arn"],
                                     promptVariables={"person": {"text": "Bo"}})["stream"]
    events = list(stream)
    streamed = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events
                       if "contentBlockDelta" in e)
    assert streamed.strip() and "metadata" in events[-1], events[-3:]
    # AWS's rules: no system / inferenceConfig with a prompt; a missing variable is named.
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=version["arn"], promptVariables={"person": {"text": "A"}},
                         inferenceConfig={"maxTokens": 5})
    assert "inferenceConfig" in str(e.value)
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=version["arn"], promptVariables={})
    assert "'person'" in str(e.value)
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=version["arn"][:-1] + "9", promptVariables={"person": {"text": "A"}})
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # A template that uses a variable it does not declare is refused, and nothing is saved.
    before = len(client.list_prompts(maxResults=1000)["promptSummaries"])
    with pytest.raises(ClientError) as e:
        client.create_prompt(name="broken", variants=[{
            "name": "v", "templateType": "TEXT", "modelId": EMBEDDED,
            "templateConfiguration": {"text": {"text": "Hi {{who}} {{what}}",
                                               "inputVariables": [{"name": "who"}]}}}])
    assert "'what'" in str(e.value)
    assert len(client.list_prompts(maxResults=1000)["promptSummaries"]) == before
    client.delete_prompt(promptIdentifier=created["id"], promptVersion="1")
    with pytest.raises(ClientError) as e:
        client.get_prompt(promptIdentifier=created["id"], promptVersion="1")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_openapi_lists_the_endpoints_and_schemathesis_finds_nothing(gw, app_key, tmp_path):
    doc = requests.get(gw.url + "/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/generate", "/ai/summarise", "/support/reply", "/v1/chat/completions",
                 "/model/{modelId}/converse"):
        assert path in doc["paths"], path
    op = doc["paths"]["/generate"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["required"] == ["prompt"]
    assert "202" in op["responses"]
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    run = subprocess.run(
        [exe, "run", gw.url + "/openapi.json", "--include-tag", "endpoints",
         "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
         "--max-examples", "25", "--workers", "1", "--request-timeout", "30",
         "--header", f"Authorization: Bearer {app_key}", "--seed", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "Tested: 3" in out, out[-3000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", out)
    assert generated and int(generated.group(1)) > 50 and generated.group(1) == generated.group(2), out[-3000:]
    # Run last, after the lifecycle test published the stored prompt: all three reach a model.
    assert "Missing test data" not in out, out[-3000:]


def test_endpoints_cli_lists_and_validates_config_files(mock, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(config(mock))
    run = subprocess.run([binary(), "endpoints", "list", "--config", str(good)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for name in ("generate", "summarise", "support-reply", "product_question→m-product"):
        assert name in run.stdout, run.stdout
    ok = subprocess.run([binary(), "endpoints", "validate", "--config", str(good)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "3 endpoint(s)" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(config(mock).replace("{{ question }}", "{{ question }} {{ unknown }}", 1))
    run = subprocess.run([binary(), "endpoints", "validate", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "'unknown'" in run.stderr and "generate" in run.stderr
