"""Asynchronous work through real clients: boto3's start_async_invoke / get_async_invoke /
list_async_invokes (output in the built-in object store), the openai SDK's batch flow (upload,
create, poll, output and error files), the anthropic SDK's message batches, generic jobs
(`/v1/jobs`: submit, poll, follow over SSE, cancel), the dead-letter queue and its redrive,
signed webhooks retried until accepted, the SSRF guard, and crash safety: 1,000 jobs with the
server killed (SIGKILL) several times while they run, each job completing exactly once, on
SQLite and on PostgreSQL. Answers come from the test kit's mock upstream (it echoes the
prompt, so each result can be matched to its job).
"""
import hashlib
import hmac
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import anthropic
import boto3
import openai
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Server, binary, free_port
from test_upstreams import Mock

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SECRET = "whsec-test-secret"
ENV = {"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "MG_TEST_WEBHOOK_SECRET": SECRET}


def config(mock, extra=""):
    return f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

[jobs]
backoff_base = "50ms"
backoff_max = "200ms"
webhook_secret_env = "MG_TEST_WEBHOOK_SECRET"
webhook_backoff = "100ms"
{extra}

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "echo"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[[models]]
id = "{HAIKU}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"
"""


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    text = config(mock, 'webhook_allow = ["127.0.0.1/32"]\nasync_over_chars = 2000\n'
                        'async_routes = ["/v1/chat/completions"]\nmax_file_bytes = 100000\n'
                        f'async_models = ["{HAIKU}"]')
    server = Server(config_text=text, tmp_path=str(tmp_path_factory.mktemp("jobs")), env=ENV)
    yield server
    server.stop()
    assert SECRET not in server.logs()


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()
    yield
    # Back to echoing (a test may have changed the default reply).
    requests.post(mock.url + "/_mock/default", json={}, timeout=5).raise_for_status()


def wait_for(fetch, done, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out; last: {value}")


def chat_body(text, model="echo"):
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def submit(gw, body=None, **kw):
    payload = {"path": "/v1/chat/completions", "body": body or chat_body("hello"), **kw}
    return requests.post(gw.url + "/v1/jobs", json=payload, timeout=10)


def job(gw, job_id):
    r = requests.get(f"{gw.url}/v1/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def finished(gw, job_id, timeout=60):
    return wait_for(lambda: job(gw, job_id),
                    lambda j: j["status"] not in ("queued", "running"), timeout)


# ----- Bedrock asynchronous invocation -----

def runtime(gw):
    return boto3.client("bedrock-runtime", endpoint_url=gw.url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="y",
                        config=Config(retries={"total_max_attempts": 1}))


def anthropic_input(text):
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
            "messages": [{"role": "user", "content": text}]}


def test_boto3_async_invoke_writes_its_output_to_the_object_store(gw):
    client = runtime(gw)
    out = {"s3OutputDataConfig": {"s3Uri": "s3://my-results/async/run1"}}
    started = client.start_async_invoke(
        modelId=HAIKU, modelInput=anthropic_input("summarise this"), outputDataConfig=out,
        clientRequestToken="token-0001", tags=[{"key": "team", "value": "search"}])
    arn = started["invocationArn"]
    assert arn.startswith("arn:aws:bedrock:us-east-1:") and ":async-invoke/" in arn
    assert len(arn.rsplit("/", 1)[1]) == 12
    # The same token returns the same invocation; with another request it is a conflict.
    again = client.start_async_invoke(modelId=HAIKU, modelInput=anthropic_input("summarise this"),
                                      outputDataConfig=out, clientRequestToken="token-0001")
    assert again["invocationArn"] == arn
    with pytest.raises(ClientError) as e:
        client.start_async_invoke(modelId=HAIKU, modelInput=anthropic_input("other"),
                                  outputDataConfig=out, clientRequestToken="token-0001")
    assert e.value.response["Error"]["Code"] == "ConflictException"

    got = wait_for(lambda: client.get_async_invoke(invocationArn=arn),
                   lambda g: g["status"] != "InProgress")
    assert got["status"] == "Completed", got
    assert got["clientRequestToken"] == "token-0001"
    assert got["modelArn"].endswith(f"foundation-model/{HAIKU}")
    assert got["submitTime"] <= got["endTime"]
    uri = got["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    assert uri == "s3://my-results/async/run1/" + arn.rsplit("/", 1)[1]
    # The output: the model's InvokeModel answer, under the object store of the data dir.
    path = os.path.join(os.path.dirname(gw.state_db), "objects", uri[len("s3://"):], "output.json")
    with open(path) as f:
        output = json.load(f)
    assert output["type"] == "message"
    assert "summarise this" in output["content"][0]["text"]
    # And `modelgate jobs output` prints it.
    cli = subprocess.run([binary(), "jobs", "output", arn], capture_output=True, text=True,
                         env={**os.environ, "MODELGATE_STATE_DB": gw.state_db, **ENV}, timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["content"] == output["content"]

    listed = client.list_async_invokes(statusEquals="Completed", sortOrder="Descending")
    assert arn in [s["invocationArn"] for s in listed["asyncInvokeSummaries"]]
    failed = client.list_async_invokes(statusEquals="Failed")["asyncInvokeSummaries"]
    assert arn not in [s["invocationArn"] for s in failed]
    paginator = client.get_paginator("list_async_invokes")
    for i in range(3):
        client.start_async_invoke(modelId=HAIKU, modelInput=anthropic_input(f"page {i}"),
                                  outputDataConfig=out)
    seen = [s["invocationArn"] for page in paginator.paginate(PaginationConfig={"PageSize": 2})
            for s in page["asyncInvokeSummaries"]]
    assert len(seen) == len(set(seen)) >= 4
    ascending = client.list_async_invokes(sortOrder="Ascending")["asyncInvokeSummaries"]
    times = [s["submitTime"] for s in ascending]
    assert times == sorted(times)


def test_bad_async_invocations_are_refused_at_submit_time(gw):
    client = runtime(gw)
    out = {"s3OutputDataConfig": {"s3Uri": "s3://my-results/x"}}
    cases = [
        (dict(modelId="no-such-model", modelInput=anthropic_input("x"), outputDataConfig=out),
         "ResourceNotFoundException"),
        (dict(modelId=HAIKU, modelInput={"messages": "not a list"}, outputDataConfig=out),
         "ValidationException"),
        (dict(modelId=HAIKU, modelInput=anthropic_input("x"),
              outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://Bad_Bucket/x"}}),
         "ValidationException"),
    ]
    before = len(client.list_async_invokes()["asyncInvokeSummaries"])
    for kwargs, code in cases:
        with pytest.raises(ClientError) as e:
            client.start_async_invoke(**kwargs)
        assert e.value.response["Error"]["Code"] == code, (kwargs, e.value.response)
    # Nothing half-created.
    assert len(client.list_async_invokes()["asyncInvokeSummaries"]) == before
    with pytest.raises(ClientError) as e:
        client.get_async_invoke(
            invocationArn="arn:aws:bedrock:us-east-1:000000000000:async-invoke/zzzzzzzzzzzz")
    assert e.value.response["Error"]["Code"] == "ValidationException"


# ----- OpenAI batches -----

def test_openai_sdk_runs_a_batch_with_an_error_file_for_bad_lines(gw, tmp_path):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    lines = [json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": chat_body(f"question {i}")}) for i in range(5)]
    lines.insert(2, "this is not json")
    lines.append(json.dumps({"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
                             "body": chat_body("duplicate")}))
    lines.append(json.dumps({"custom_id": "unknown", "method": "POST", "url": "/v1/chat/completions",
                             "body": chat_body("x", model="no-such-model")}))
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with open(path, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    assert uploaded.bytes == path.stat().st_size
    assert client.files.content(uploaded.id).read() == path.read_bytes()

    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"job": "nightly"})
    assert batch.status == "in_progress"
    batch = wait_for(lambda: client.batches.retrieve(batch.id),
                     lambda b: b.status in ("completed", "failed", "cancelled"))
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed,
            batch.request_counts.failed) == (8, 5, 3)
    assert batch.metadata == {"job": "nightly"}
    output = [json.loads(l) for l in client.files.content(batch.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(5)]
    for o in output:
        n = o["custom_id"].split("-")[1]
        assert o["response"]["status_code"] == 200
        assert f"question {n}" in o["response"]["body"]["choices"][0]["message"]["content"]
    errors = [json.loads(l) for l in client.files.content(batch.error_file_id).text.splitlines()]
    assert len(errors) == 3
    messages = " | ".join(e["error"]["message"] for e in errors)
    assert "not JSON" in messages and "more than once" in messages and "no-such-model" in messages
    assert batch.id in [b.id for b in client.batches.list()]


def test_a_batch_expires_at_the_end_of_its_window(mock, tmp_path):
    extra = 'batch_window = "2s"\nconcurrency = 1\nper_model_concurrency = 1'
    server = Server(config_text=config(mock, extra), tmp_path=str(tmp_path), env=ENV)
    try:
        requests.post(mock.url + "/_mock/default", timeout=5, json={
            "blocks": [{"text": "slow"}], "first_byte_delay_ms": 800}).raise_for_status()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        path = tmp_path / "slow.jsonl"
        path.write_text("".join(json.dumps({"custom_id": f"s{i}", "url": "/v1/chat/completions",
                                            "body": chat_body(f"slow {i}")}) + "\n" for i in range(6)))
        with open(path, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        batch = wait_for(lambda: client.batches.retrieve(batch.id),
                         lambda b: b.status in ("completed", "expired", "cancelled"))
        assert batch.status == "expired" and batch.expired_at is not None, batch
        counts = batch.request_counts
        assert counts.total == 6 and 1 <= counts.completed < 6
        assert counts.completed + counts.failed == 6
        errors = [json.loads(l) for l in client.files.content(batch.error_file_id).text.splitlines()]
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    finally:
        server.stop()


def test_a_batch_with_a_bad_endpoint_or_file_is_refused(gw, tmp_path):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "url": "/v1/chat/completions",
                                "body": chat_body("x")}) + "\n")
    with open(path, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/moderations",
                              completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        with open(path, "rb") as f:
            client.files.create(file=f, purpose="fine-tune-nonsense")
    big = tmp_path / "big.jsonl"
    big.write_text((json.dumps({"custom_id": "a", "url": "/v1/chat/completions",
                                "body": chat_body("x" * 1000)}) + "\n") * 120)
    with pytest.raises(openai.BadRequestError, match="over the limit"):
        with open(big, "rb") as f:
            client.files.create(file=f, purpose="batch")
    assert all(f.filename != "big.jsonl" for f in client.files.list())


# ----- Anthropic message batches -----

def test_anthropic_sdk_runs_a_message_batch(gw):
    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    batch = client.messages.batches.create(requests=[
        {"custom_id": f"q{i}", "params": {"model": "echo", "max_tokens": 32,
                                          "messages": [{"role": "user", "content": f"item {i}"}]}}
        for i in range(4)
    ])
    assert batch.processing_status == "in_progress"
    batch = wait_for(lambda: client.messages.batches.retrieve(batch.id),
                     lambda b: b.processing_status == "ended")
    assert batch.request_counts.succeeded == 4 and batch.request_counts.errored == 0
    results = {r.custom_id: r for r in client.messages.batches.results(batch.id)}
    assert sorted(results) == ["q0", "q1", "q2", "q3"]
    for cid, r in results.items():
        assert r.result.type == "succeeded"
        assert f"item {cid[1:]}" in r.result.message.content[0].text
    with pytest.raises(anthropic.BadRequestError, match="requests.1.params"):
        client.messages.batches.create(requests=[
            {"custom_id": "ok", "params": {"model": "echo", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "x"}]}},
            {"custom_id": "bad", "params": {"model": "no-such-model", "max_tokens": 8,
                                            "messages": [{"role": "user", "content": "x"}]}},
        ])


# ----- Generic jobs -----

def test_generic_jobs_submit_poll_follow_and_cancel(gw, mock):
    r = submit(gw, body=chat_body("generic"), priority=1, metadata={"ticket": 7},
               idempotency_key="generic-1")
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    first = r.json()
    # The same idempotency key: the same job, 200.
    again = submit(gw, body=chat_body("generic"), idempotency_key="generic-1")
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    # Follow over SSE until it ends.
    events = []
    with requests.get(f"{gw.url}/v1/jobs/{first['id']}/events", stream=True, timeout=30) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                events.append(json.loads(line[6:])["status"])
    assert events[-1] == "succeeded" and len(events) >= 1
    done = job(gw, first["id"])
    assert done["result"]["status"] == 200
    assert "generic" in done["result"]["body"]["choices"][0]["message"]["content"]
    assert done["metadata"] == {"ticket": 7} and done["attempts"] == 1

    # A slow job is cancelled while it waits.
    mock.push({"blocks": [{"text": "slow"}], "first_byte_delay_ms": 3000})
    slow = submit(gw, body=chat_body("slow")).json()
    wait_for(lambda: job(gw, slow["id"]), lambda j: j["status"] == "running")
    cancelled = requests.post(f"{gw.url}/v1/jobs/{slow['id']}/cancel", timeout=10).json()
    assert cancelled["status"] == "cancelled"
    time.sleep(3.5)
    assert job(gw, slow["id"])["status"] == "cancelled" and job(gw, slow["id"])["result"] is None

    listed = requests.get(gw.url + "/v1/jobs?status=succeeded&limit=100", timeout=10).json()
    assert first["id"] in [j["id"] for j in listed["data"]]
    assert all(j["status"] == "succeeded" for j in listed["data"])


def test_a_large_synchronous_call_becomes_a_job(gw):
    small = requests.post(gw.url + "/v1/chat/completions", json=chat_body("short"), timeout=10)
    assert small.status_code == 200 and small.json()["object"] == "chat.completion"
    document = "word " * 600
    big = requests.post(gw.url + "/v1/chat/completions", json=chat_body(document), timeout=10)
    assert big.status_code == 202, big.text
    assert big.headers["location"] == big.json()["status_url"]
    done = finished(gw, big.json()["id"])
    assert done["status"] == "succeeded"
    assert done["result"]["body"]["choices"][0]["message"]["content"].startswith("echo: word word")
    # A large stream is served as a stream.
    stream = requests.post(gw.url + "/v1/chat/completions", timeout=10,
                           json={**chat_body(document), "stream": True})
    assert stream.status_code == 200 and "data: [DONE]" in stream.text
    # A model named in async_models: its large calls become jobs on the other doors too.
    msg = requests.post(gw.url + "/v1/messages", timeout=10, headers={"anthropic-version": "2023-06-01"},
                        json={"model": HAIKU, "max_tokens": 32,
                              "messages": [{"role": "user", "content": document}]})
    assert msg.status_code == 202, msg.text
    done = finished(gw, msg.json()["id"])
    assert done["status"] == "succeeded" and done["result"]["body"]["type"] == "message"
    short = requests.post(gw.url + "/v1/messages", timeout=10, headers={"anthropic-version": "2023-06-01"},
                          json={"model": HAIKU, "max_tokens": 32,
                                "messages": [{"role": "user", "content": "short"}]})
    assert short.status_code == 200 and short.json()["type"] == "message"
    # An unknown model is refused in the caller's dialect, nothing queued.
    bad = requests.post(gw.url + "/v1/chat/completions", json=chat_body(document, model="nope"),
                        timeout=10)
    assert bad.status_code == 404 and "nope" in bad.json()["error"]["message"]


def test_bad_jobs_get_clear_errors_and_nothing_is_created(gw):
    before = len(requests.get(gw.url + "/v1/jobs?limit=1000", timeout=10).json()["data"])
    cases = [
        ({"path": "/v1/chat/completions", "body": chat_body("x", model="no-such-model")}, 404, "no-such-model"),
        ({"path": "/v1/chat/completions", "body": {**chat_body("x"), "stream": True}}, 400, "stream"),
        ({"path": "/admin/keys", "body": {}}, 400, "path"),
        ({"path": "/v1/chat/completions", "body": chat_body("x"), "priority": 12}, 400, "priority"),
        ({"path": "/v1/chat/completions", "body": chat_body("x"),
          "headers": {"authorization": "Bearer x"}}, 400, "headers.authorization"),
        ({"path": "/v1/chat/completions", "body": chat_body("x"), "surprise": 1}, 400, "surprise"),
    ]
    for payload, status, words in cases:
        r = requests.post(gw.url + "/v1/jobs", json=payload, timeout=10)
        assert r.status_code == status, (payload, r.text)
        assert words in r.json()["error"]["message"], r.text
    r = requests.post(gw.url + "/v1/jobs", data="{not json", timeout=10,
                      headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert requests.get(gw.url + "/v1/jobs/job_nope", timeout=10).status_code == 404
    after = len(requests.get(gw.url + "/v1/jobs?limit=1000", timeout=10).json()["data"])
    assert after == before


def test_a_job_that_always_fails_is_dead_lettered_then_redriven(gw, mock):
    requests.post(mock.url + "/_mock/default", json={"status": 500, "message": "upstream is down"},
                  timeout=5).raise_for_status()
    j = submit(gw, body=chat_body("doomed"), max_attempts=3).json()
    dead = finished(gw, j["id"])
    assert dead["status"] == "dead", dead
    assert dead["attempts"] == 3
    assert "upstream is down" in dead["last_error"]
    assert mock.calls() == 3
    dlq = requests.get(gw.url + "/admin/jobs?status=dead", timeout=10).json()["data"]
    assert j["id"] in [d["id"] for d in dlq]
    # The upstream recovers; redriving runs it again.
    requests.post(mock.url + "/_mock/default", json={"blocks": [{"text": "recovered"}]},
                  timeout=5).raise_for_status()
    r = requests.post(gw.url + "/admin/jobs/redrive", json={"id": j["id"]}, timeout=10)
    assert r.json() == {"redriven": 1}
    done = finished(gw, j["id"])
    assert done["status"] == "succeeded"
    assert done["result"]["body"]["choices"][0]["message"]["content"] == "recovered"
    # A 4xx answer is not retried: it fails at once.
    requests.post(mock.url + "/_mock/default", json={"status": 400, "message": "bad input"},
                  timeout=5).raise_for_status()
    bad = finished(gw, submit(gw, body=chat_body("x")).json()["id"])
    assert bad["status"] == "failed" and bad["attempts"] == 1 and bad["result"]["status"] == 400
    metrics = requests.get(gw.url + "/metrics", timeout=10).text
    for outcome in ("dead", "retried", "succeeded", "failed"):
        assert f'modelgate_job_attempts_total{{kind="job",outcome="{outcome}"}}' in metrics, outcome
    assert "modelgate_job_seconds_bucket" in metrics and "modelgate_jobs_running" in metrics


def test_cli_batch_run_and_the_operator_commands(gw, tmp_path):
    lines = [json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": chat_body(f"cli {i}")}) for i in range(4)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "MODELGATE_STATE_DB": gw.state_db, **ENV}

    def run(*args):
        return subprocess.run([binary(), *args], capture_output=True, text=True, env=env, timeout=120)

    out = tmp_path / "out.jsonl"
    first = run("batch", "run", str(path), "--url", gw.url, "--output", str(out))
    assert first.returncode == 0, first.stderr
    assert "done 4  failed 0  input tokens 40  output tokens 20" in first.stdout, first.stdout
    results = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in results) == ["c0", "c1", "c2", "c3"]
    for r in results:
        assert f"cli {r['custom_id'][1:]}" in r["response"]["body"]["choices"][0]["message"]["content"]
    # Running the same file again picks up the same jobs.
    again = run("batch", "run", str(path), "--url", gw.url, "--output", str(out))
    assert again.returncode == 0, again.stderr
    assert sorted(r["job_id"] for r in results) == \
        sorted(json.loads(l)["job_id"] for l in out.read_text().splitlines())
    listed = run("jobs", "list", "--status", "succeeded", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    assert all(r["job_id"] in listed.stdout for r in results)
    got = run("jobs", "get", results[0]["job_id"])
    assert json.loads(got.stdout)["status"] == "succeeded"
    assert run("jobs", "get", "job_nope").returncode != 0
    # A job submitted from the command line.
    body = tmp_path / "body.json"
    body.write_text(json.dumps(chat_body("from the cli")))
    sub = run("jobs", "submit", "/v1/chat/completions", str(body), "--url", gw.url, "--priority", "0")
    assert sub.returncode == 0, sub.stderr
    done = finished(gw, json.loads(sub.stdout)["id"])
    assert done["priority"] == 0 and done["status"] == "succeeded"
    red = run("jobs", "redrive", "--all")
    assert red.returncode == 0 and red.stdout.startswith("redriven "), red.stderr


# ----- Webhooks -----

class Receiver:
    """Answers the scripted statuses in turn (then 200), verifying each signature."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.deliveries = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                header = self.headers.get("modelgate-signature", "")
                parts = dict(p.split("=", 1) for p in header.split(","))
                expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body,
                                    hashlib.sha256).hexdigest()
                valid = hmac.compare_digest(expected, parts["v1"]) and \
                    abs(time.time() - int(parts["t"])) < 300
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.deliveries.append((valid, status, json.loads(body),
                                            self.headers.get("modelgate-delivery-attempt")))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def test_webhooks_are_signed_and_retried_until_accepted_once(gw):
    receiver = Receiver([500, 500])
    try:
        j = submit(gw, body=chat_body("notify me"), callback_url=receiver.url).json()
        wait_for(lambda: job(gw, j["id"]), lambda x: (x["webhook"] or {}).get("state") == "delivered")
        assert [(valid, status) for valid, status, _, _ in receiver.deliveries] == \
            [(True, 500), (True, 500), (True, 200)]
        assert [a for *_, a in receiver.deliveries] == ["1", "2", "3"]
        payload = receiver.deliveries[-1][2]
        assert payload["id"] == j["id"] and payload["status"] == "succeeded"
        assert "notify me" in payload["result"]["body"]["choices"][0]["message"]["content"]
        log = requests.get(f"{gw.url}/v1/jobs/{j['id']}/deliveries", timeout=10).json()["data"]
        assert [d["status"] for d in log] == [500, 500, 200]
        time.sleep(1)
        assert len(receiver.deliveries) == 3  # exactly one accepted delivery, none after it
        metrics = requests.get(gw.url + "/metrics", timeout=10).text
        assert 'modelgate_webhook_deliveries_total{result="retry"}' in metrics
        assert 'modelgate_webhook_deliveries_total{result="delivered"}' in metrics
    finally:
        receiver.stop()


def test_callbacks_to_internal_addresses_are_refused(gw, mock, tmp_path):
    # The module's gateway allows 127.0.0.1/32 only: other internal targets are refused.
    for url in ["http://127.0.0.2/hook", "http://169.254.169.254/latest", "http://10.0.0.1/x",
                "http://[::1]/x", "ftp://example.com/x"]:
        r = submit(gw, callback_url=url)
        assert r.status_code == 400, (url, r.text)
    # A gateway without an allow-list refuses loopback itself.
    plain = Server(config_text=config(mock), tmp_path=str(tmp_path), env=ENV)
    try:
        receiver = Receiver([])
        r = requests.post(plain.url + "/v1/jobs", timeout=10, json={
            "path": "/v1/chat/completions", "body": chat_body("x"), "callback_url": receiver.url})
        assert r.status_code == 400 and "loopback" in r.json()["error"]["message"], r.text
        receiver.stop()
    finally:
        plain.stop()


def test_heartbeats_keep_a_long_job_with_its_worker(mock, tmp_path):
    # A 1.5 s visibility timeout and a 4 s model call: without heartbeats the job would be
    # received again (and the model called again) while the first call runs.
    server = Server(config_text=config(mock, 'visibility_timeout = "1500ms"'),
                    tmp_path=str(tmp_path), env=ENV)
    try:
        mock.push({"blocks": [{"text": "took a while"}], "first_byte_delay_ms": 4000})
        j = submit(server, body=chat_body("long")).json()
        done = finished(server, j["id"])
        assert done["status"] == "succeeded" and done["attempts"] == 1, done
        assert done["result"]["body"]["choices"][0]["message"]["content"] == "took a while"
        assert mock.calls() == 1
    finally:
        server.stop()


def test_a_model_runs_at_most_its_share_of_jobs_at_once(mock, tmp_path):
    extra = 'concurrency = 8\nper_model_concurrency = 2'
    server = Server(config_text=config(mock, extra), tmp_path=str(tmp_path), env=ENV)
    try:
        requests.post(mock.url + "/_mock/default", timeout=5, json={
            "blocks": [{"text": "slow"}], "first_byte_delay_ms": 400}).raise_for_status()
        ids = [submit(server, body=chat_body(f"m {i}")).json()["id"] for i in range(8)]
        seen = []

        def running():
            text = requests.get(server.url + "/metrics", timeout=5).text
            line = next(l for l in text.splitlines() if l.startswith("modelgate_jobs_running "))
            seen.append(float(line.split()[1]))
            return [job(server, i)["status"] for i in ids]

        wait_for(running, lambda states: all(s == "succeeded" for s in states), timeout=60)
        assert max(seen) == 2, seen  # reached, never exceeded
        assert mock.calls() == 8
    finally:
        server.stop()


def test_jobs_batches_and_files_belong_to_their_caller(mock, tmp_path):
    admin_key = "mg-test-admin-credential"
    extra = '\n[auth]\nadmin_key_env = "MG_TEST_ADMIN_KEY"\n'
    server = Server(config_text=config(mock) + extra, tmp_path=str(tmp_path),
                    env={**ENV, "MG_TEST_ADMIN_KEY": admin_key})
    try:
        def new_key():
            r = requests.post(server.url + "/admin/keys", json={}, timeout=10,
                              headers={"Authorization": f"Bearer {admin_key}"})
            assert r.status_code == 201, r.text
            return r.json()
        alice, bob = new_key(), new_key()
        auth = lambda k: {"Authorization": f"Bearer {k['key']}"}  # noqa: E731
        r = requests.post(server.url + "/v1/jobs", headers=auth(alice), timeout=10,
                          json={"path": "/v1/chat/completions", "body": chat_body("mine")})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert requests.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(bob), timeout=10).status_code == 404
        assert requests.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=auth(bob), timeout=10).status_code == 404
        assert job_id not in [j["id"] for j in requests.get(
            server.url + "/v1/jobs", headers=auth(bob), timeout=10).json()["data"]]
        mine = wait_for(lambda: requests.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(alice),
                                             timeout=10).json(), lambda j: j["status"] == "succeeded")
        assert "mine" in mine["result"]["body"]["choices"][0]["message"]["content"]
        # Without credentials: refused.
        assert requests.get(server.url + "/v1/jobs", timeout=10).status_code == 401
        # Async invocations with each key's SigV4 pair.
        def rt(k):
            return boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1",
                                aws_access_key_id=k["access_key_id"],
                                aws_secret_access_key=k["secret_access_key"],
                                config=Config(retries={"total_max_attempts": 1}))
        arn = rt(alice).start_async_invoke(
            modelId=HAIKU, modelInput=anthropic_input("sigv4"),
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bkt/x"}})["invocationArn"]
        assert rt(alice).get_async_invoke(invocationArn=arn)["invocationArn"] == arn
        with pytest.raises(ClientError):
            rt(bob).get_async_invoke(invocationArn=arn)
        assert rt(bob).list_async_invokes()["asyncInvokeSummaries"] == []
        # Files too.
        oai_a = openai.OpenAI(base_url=server.url + "/v1", api_key=alice["key"], max_retries=0)
        oai_b = openai.OpenAI(base_url=server.url + "/v1", api_key=bob["key"], max_retries=0)
        path = tmp_path / "f.jsonl"
        path.write_text(json.dumps({"custom_id": "a", "url": "/v1/chat/completions",
                                    "body": chat_body("x")}) + "\n")
        with open(path, "rb") as f:
            uploaded = oai_a.files.create(file=f, purpose="batch")
        with pytest.raises(openai.NotFoundError):
            oai_b.files.content(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            oai_b.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
        # The admin sees every caller's jobs.
        every = requests.get(server.url + "/admin/jobs?limit=100", timeout=10,
                             headers={"Authorization": f"Bearer {admin_key}"}).json()["data"]
        assert job_id in [j["id"] for j in every]
    finally:
        server.stop()


# ----- Crash safety -----

def fresh_postgres():
    db = "mgcrash_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"CREATE DATABASE {db}"], check=True, capture_output=True)
    return db


def drop_postgres(db):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=True, capture_output=True)


def crash_run(mock, tmp_path, store, jobs=1000, kills=3):
    text = config(mock, 'visibility_timeout = "2s"') + store
    # One state file across restarts (the server's default name depends on its port).
    env = {**ENV, "MODELGATE_STATE_DB": str(tmp_path / "crash-state.db")}
    server = Server(config_text=text, tmp_path=str(tmp_path), env=env)
    ids = {}
    rng = random.Random(7)
    session = requests.Session()

    def restart():
        nonlocal server
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        server.log.close()
        # The same port and state: a restart, not a new gateway.
        server = Server.__new__(Server)
        Server.__init__(server, config_text=text, tmp_path=str(tmp_path), env=env)

    kill_at = sorted(rng.sample(range(50, jobs), kills - 1))
    try:
        for i in range(jobs):
            if kill_at and i == kill_at[0]:
                kill_at.pop(0)
                restart()
            while True:
                try:
                    r = session.post(server.url + "/v1/jobs", timeout=10, json={
                        "path": "/v1/chat/completions", "body": chat_body(f"job {i} of the crash run"),
                        "idempotency_key": f"crash-{i}"})
                    assert r.status_code in (200, 202), r.text
                    ids[i] = r.json()["id"]
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
        # One more kill while the queue drains.
        time.sleep(rng.uniform(0.1, 0.5))
        restart()

        def ended():
            page = session.get(server.url + "/admin/jobs?limit=1000&kind=job", timeout=30).json()["data"]
            return [j for j in page if j["idempotency_key"] and j["idempotency_key"].startswith("crash-")]

        final = wait_for(ended, lambda js: len(js) == jobs and all(
            j["status"] not in ("queued", "running") for j in js), timeout=240)
        assert len({j["id"] for j in final}) == jobs  # no duplicate jobs
        assert set(ids.values()) == {j["id"] for j in final}  # none missing
        by_id = {j["id"]: j for j in final}
        for i, job_id in ids.items():
            j = by_id[job_id]
            assert j["status"] == "succeeded", j
            # One result, and it is this job's answer.
            assert f"job {i} of the crash run" in j["result"]["body"]["choices"][0]["message"]["content"]
        # At least once: the model may have been called again for a job whose worker died.
        assert mock.calls() >= jobs
        return mock.calls() - jobs
    finally:
        server.stop()


def test_killed_servers_lose_and_duplicate_nothing_on_sqlite(mock, tmp_path):
    extra = crash_run(mock, tmp_path, "")
    print(f"sqlite crash run: {extra} repeated model calls")


def test_killed_servers_lose_and_duplicate_nothing_on_postgres(mock, tmp_path):
    if not os.environ.get("MODELGATE_TEST_POSTGRES_URL"):
        assert not os.environ.get("CI"), "MODELGATE_TEST_POSTGRES_URL must be set under CI"
        pytest.skip("MODELGATE_TEST_POSTGRES_URL is not set")
    db = fresh_postgres()
    try:
        extra = crash_run(mock, tmp_path,
                          f'\n[store]\npostgres_url = "postgres://postgres@127.0.0.1:5432/{db}"\n')
        print(f"postgres crash run: {extra} repeated model calls")
    finally:
        drop_postgres(db)


# ----- An S3-compatible object store -----

@pytest.fixture
def s3_server():
    """moto's S3-compatible server (from PyPI), on loopback."""
    port = free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_outputs_and_files_go_to_an_s3_compatible_store(mock, tmp_path, s3_server):
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="minio", aws_secret_access_key="minio-secret")
    for bucket in ("results", "modelgate-files"):
        s3.create_bucket(Bucket=bucket)
    store = f"""
[jobs.object_store]
type = "s3"
endpoint = "{s3_server}"
allow_http = true
access_key_id_env = "MG_TEST_S3_KEY"
secret_access_key_env = "MG_TEST_S3_SECRET"
"""
    env = {**ENV, "MG_TEST_S3_KEY": "minio", "MG_TEST_S3_SECRET": "minio-secret"}
    server = Server(config_text=config(mock) + store, tmp_path=str(tmp_path), env=env)
    try:
        client = runtime(server)
        arn = client.start_async_invoke(
            modelId=HAIKU, modelInput=anthropic_input("to the bucket"),
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://results/runs"}})["invocationArn"]
        got = wait_for(lambda: client.get_async_invoke(invocationArn=arn),
                       lambda g: g["status"] != "InProgress")
        assert got["status"] == "Completed", got
        key = f"runs/{arn.rsplit('/', 1)[1]}/output.json"
        output = json.loads(s3.get_object(Bucket="results", Key=key)["Body"].read())
        assert "to the bucket" in output["content"][0]["text"]
        # Nothing written locally.
        assert not os.path.exists(os.path.join(str(tmp_path), "objects"))
        # Uploaded files and batch outputs live in the files bucket.
        oai = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        path = tmp_path / "in.jsonl"
        path.write_text(json.dumps({"custom_id": "a", "url": "/v1/chat/completions",
                                    "body": chat_body("s3 batch")}) + "\n")
        with open(path, "rb") as f:
            uploaded = oai.files.create(file=f, purpose="batch")
        stored = s3.get_object(Bucket="modelgate-files", Key=uploaded.id)["Body"].read()
        assert stored == path.read_bytes()
        batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
        batch = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "completed")
        assert "s3 batch" in oai.files.content(batch.output_file_id).text
        oai.files.delete(uploaded.id)
        with pytest.raises(ClientError):
            s3.head_object(Bucket="modelgate-files", Key=uploaded.id)
    finally:
        server.stop()
