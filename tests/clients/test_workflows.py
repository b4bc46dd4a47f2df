"""Workflows through real clients: boto3's `stepfunctions` client against the gateway's Step
Functions API; the seed worklog's workflow (input -> embedded model -> stored record -> e-mail)
end to end against a real SMTP server (aiosmtpd) with Retry and Catch routing a model failure
to a failure e-mail; human approval with task tokens answered through boto3 and the CLI; and
crash safety: 200 executions in flight (waits, retries, task-token waits) with the server
killed (SIGKILL) twice, every execution finishing and no completed task running again, on
SQLite and on PostgreSQL.
"""
import email
import email.policy
import hashlib
import hmac
import http.server
import json
import signal
import subprocess
import threading
import time
import uuid

import boto3
import pytest
import requests
from aiosmtpd.controller import Controller
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import GATEWAY_CONFIG, Server, binary, free_port
from test_jobs import drop_postgres, fresh_postgres

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::000000000000:role/flows"


class Mailbox:
    """A real SMTP server on loopback that keeps every message."""

    def __init__(self):
        self.messages = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                body = msg.get_body(preferencelist=("plain", "html"))
                box.messages.append({
                    "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                    "subject": str(msg["subject"]), "body": body.get_content() if body else "",
                })
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def wait_for(self, pred, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [m for m in self.messages if pred(m)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no such e-mail; got {self.messages}")

    def stop(self):
        self.controller.stop()


class Receiver:
    """An HTTP service for http:invoke tasks. `/work/<execution>/call` answers `{"n": …}`
    (the first request of every third execution fails with 500, so Retry runs); `/token`
    keeps the task token it is sent. Every request is logged with its arrival time."""

    def __init__(self):
        self.log = []
        self.tokens = {}
        self.failed_once = set()
        self.hooks = []
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                arrived = time.time()
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/hook":
                    with rec.lock:
                        rec.hooks.append((dict(self.headers), raw))
                    self.send_response(204)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.loads(raw or b"{}")
                parts = self.path.strip("/").split("/")
                name, kind = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[-1])
                with rec.lock:
                    rec.log.append((name, kind, arrived))
                    status, answer = 200, {"ok": True}
                    if kind == "call":
                        n = body.get("n", 0)
                        if n % 3 == 0 and name not in rec.failed_once:
                            rec.failed_once.add(name)
                            status, answer = 500, {"error": "try again"}
                        else:
                            answer = {"n": n}
                    elif kind == "token":
                        rec.tokens[name] = body["token"]
                if kind == "call":
                    time.sleep(0.4)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway was killed while it waited for this answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def flows_config(smtp_port, extra=""):
    return GATEWAY_CONFIG + f"""
[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

[[providers]]
name = "down"
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "broken-model"
provider = "down"
upstream_id = "nothing-listens-here"

[jobs]
webhook_secret_env = "MG_TEST_WEBHOOK_SECRET"
webhook_allow = ["127.0.0.1/32"]

[workflows]
lease = "2s"
poll = "100ms"
http_allow = ["127.0.0.1/32"]

[workflows.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "Modelgate Flows <flows@example.com>"

[[workflows.tables]]
name = "Results"
partition_key = "id"
{extra}
"""


ENV = {"MG_TEST_UPSTREAM_KEY": "unused", "MG_TEST_WEBHOOK_SECRET": "whsec-flows"}


def sfn(url, **kw):
    return boto3.client(
        "stepfunctions", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}, inject_host_prefix=False, **kw))


def wait_done(client, arn, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = client.describe_execution(executionArn=arn)
        if d["status"] != "RUNNING":
            return d
        time.sleep(0.1)
    raise AssertionError(f"{arn} still running")


def history(client, arn):
    events, token = [], None
    while True:
        kw = {"executionArn": arn, "maxResults": 1000}
        if token:
            kw["nextToken"] = token
        page = client.get_execution_history(**kw)
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


@pytest.fixture(scope="module")
def mailbox():
    m = Mailbox()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gateway(mailbox, tmp_path_factory):
    s = Server(config_text=flows_config(mailbox.port), tmp_path=str(tmp_path_factory.mktemp("flows")), env=ENV)
    yield s
    s.stop()


WORKLOG = {
    "Comment": "Seed 004: receive input, call the model, store the result, send an e-mail",
    "StartAt": "CallModel",
    "States": {
        "CallModel": {
            "Type": "Task", "Resource": "arn:aws:states:::bedrock:invokeModel",
            "Parameters": {"ModelId.$": "$.model", "Body": {
                "anthropic_version": "bedrock-2023-05-31", "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "user", "content.$": "$.question"}]}},
            "ResultSelector": {"answer.$": "$.Body.content[0].text", "tokens.$": "$.Body.usage.output_tokens"},
            "ResultPath": "$.result",
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 2}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotifyFailure"}],
            "Next": "StoreResult"},
        "StoreResult": {
            "Type": "Task", "Resource": "arn:aws:states:::dynamodb:putItem",
            "Parameters": {"TableName": "Results", "Item": {
                "id": {"S.$": "$$.Execution.Name"}, "question": {"S.$": "$.question"},
                "answer": {"S.$": "$.result.answer"}}},
            "ResultPath": None, "Next": "ShouldWait"},
        "ShouldWait": {"Type": "Choice", "Choices": [
            {"Variable": "$.pause", "NumericGreaterThan": 0, "Next": "Pause"}], "Default": "NotifySuccess"},
        "Pause": {"Type": "Wait", "SecondsPath": "$.pause", "Next": "NotifySuccess"},
        "NotifySuccess": {
            "Type": "Task", "Resource": "arn:aws:states:::aws-sdk:sesv2:sendEmail",
            "Parameters": {"FromEmailAddress": "flows@example.com",
                           "Destination": {"ToAddresses.$": "States.Array($.email)"},
                           "Content": {"Simple": {
                               "Subject": {"Data.$": "States.Format('Answer for {}', $$.Execution.Name)"},
                               "Body": {"Text": {"Data.$": "States.Format('The model answered: {}', $.result.answer)"}}}}},
            "ResultPath": "$.mail", "End": True},
        "NotifyFailure": {
            "Type": "Task", "Resource": "arn:modelgate:states:::email:send",
            "Parameters": {"To.$": "$.email", "Subject": "Workflow {{ name }} failed",
                           "Text": "The model call failed with {{ error.Error }}: {{ error.Cause }}",
                           "Variables": {"name.$": "$$.Execution.Name", "error.$": "$.error"}},
            "ResultPath": None, "Next": "Failed"},
        "Failed": {"Type": "Fail", "Error": "ModelFailed", "Cause": "The model could not answer; a failure e-mail was sent"},
    },
}


def test_seed_worklog_workflow_end_to_end(gateway, mailbox):
    c = sfn(gateway.url)
    arn = c.create_state_machine(name="worklog", definition=json.dumps(WORKLOG), roleArn=ROLE)["stateMachineArn"]
    run = c.start_execution(stateMachineArn=arn, name="ok-run", input=json.dumps(
        {"model": HAIKU, "question": "Say hello.", "email": "ops@example.com", "pause": 1}))
    d = wait_done(c, run["executionArn"])
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    answer = out["result"]["answer"]
    assert answer.strip() and out["result"]["tokens"] > 0
    # The e-mail arrived through SMTP with the model's answer in its body.
    mail = mailbox.wait_for(lambda m: m["subject"] == "Answer for ok-run")
    assert mail["to"] == ["ops@example.com"] and mail["from"] == "flows@example.com"
    assert f"The model answered: {answer}" in mail["body"]
    assert out["mail"]["MessageId"]
    # The record is in the document store: read it back with getItem.
    reader = c.create_state_machine(name="reader", roleArn=ROLE, definition=json.dumps({
        "StartAt": "Get", "States": {"Get": {"Type": "Task", "Resource": "arn:aws:states:::dynamodb:getItem",
                                             "Parameters": {"TableName": "Results", "Key": {"id": {"S.$": "$.id"}}}, "End": True}}}))
    r = wait_done(c, c.start_execution(stateMachineArn=reader["stateMachineArn"], input='{"id": "ok-run"}')["executionArn"])
    item = json.loads(r["output"])["Item"]
    assert item == {"id": {"S": "ok-run"}, "question": {"S": "Say hello."}, "answer": {"S": answer}}
    kinds = [e["type"] for e in history(c, run["executionArn"])]
    assert kinds[0] == "ExecutionStarted" and kinds[-1] == "ExecutionSucceeded"
    for k in ["TaskScheduled", "TaskSucceeded", "ChoiceStateEntered", "WaitStateEntered", "WaitStateExited"]:
        assert k in kinds, kinds
    assert kinds.count("TaskSucceeded") == 3

    # The model fails: Retry (two more attempts, 1 s then 2 s), then Catch to the failure e-mail.
    started = time.time()
    bad = c.start_execution(stateMachineArn=arn, name="broken-run", input=json.dumps(
        {"model": "broken-model", "question": "Say hello.", "email": "ops@example.com", "pause": 0}))
    d = wait_done(c, bad["executionArn"])
    assert d["status"] == "FAILED" and d["error"] == "ModelFailed", d
    assert time.time() - started >= 3
    mail = mailbox.wait_for(lambda m: m["subject"] == "Workflow broken-run failed")
    assert "The model call failed with Bedrock." in mail["body"], mail
    events = history(c, bad["executionArn"])
    kinds = [e["type"] for e in events]
    assert kinds.count("TaskScheduled") == 4 and kinds.count("TaskFailed") == 3, kinds
    failed = [e for e in events if e["type"] == "TaskFailed"]
    assert all(f["taskFailedEventDetails"]["error"].startswith("Bedrock.") for f in failed)
    assert kinds[-2:] == ["FailStateEntered", "ExecutionFailed"]
    # Metrics per state machine.
    metrics = requests.get(gateway.url + "/metrics", timeout=10).text
    assert 'modelgate_workflow_executions_total{state_machine="worklog",status="succeeded"} 1' in metrics
    assert 'modelgate_workflow_executions_total{state_machine="worklog",status="failed"} 1' in metrics
    assert 'modelgate_workflow_state_transitions_total{state_machine="worklog"}' in metrics


APPROVAL = {
    "StartAt": "Confident?",
    "States": {
        "Confident?": {"Type": "Choice", "Choices": [
            {"Variable": "$.confidence", "NumericGreaterThan": 0.9, "Next": "Deliver"}], "Default": "AskReviewer"},
        "AskReviewer": {
            "Type": "Task", "Resource": "arn:modelgate:states:::email:send.waitForTaskToken",
            "Parameters": {"To": "reviewer@example.com", "Subject": "Review {{ name }}",
                           "Text": "Draft: {{ draft }}\nToken: {{ token }}",
                           "Variables": {"name.$": "$$.Execution.Name", "draft.$": "$.draft", "token.$": "$$.Task.Token"}},
            "ResultPath": "$.review", "HeartbeatSeconds": 600, "Next": "Approved?"},
        "Approved?": {"Type": "Choice", "Choices": [
            {"Variable": "$.review.approved", "BooleanEquals": True, "Next": "Deliver"}], "Default": "Rejected"},
        "Deliver": {"Type": "Pass", "Parameters": {"delivered.$": "$.draft"}, "End": True},
        "Rejected": {"Type": "Fail", "Error": "Rejected", "Cause": "The reviewer said no"},
    },
}


def token_from(mailbox, name):
    mail = mailbox.wait_for(lambda m: m["subject"] == f"Review {name}")
    return mail["body"].split("Token: ", 1)[1].strip()


def test_human_approval_with_task_tokens(gateway, mailbox):
    c = sfn(gateway.url)
    arn = c.create_state_machine(name="approval", definition=json.dumps(APPROVAL), roleArn=ROLE)["stateMachineArn"]
    # Confident: delivered at once, nobody asked.
    d = wait_done(c, c.start_execution(stateMachineArn=arn, name="sure", input='{"draft": "A", "confidence": 0.95}')["executionArn"])
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"delivered": "A"}
    # Unsure: the reviewer gets an e-mail with the token; the execution waits.
    unsure = c.start_execution(stateMachineArn=arn, name="unsure", input='{"draft": "B", "confidence": 0.5}')["executionArn"]
    token = token_from(mailbox, "unsure")
    time.sleep(0.5)
    assert c.describe_execution(executionArn=unsure)["status"] == "RUNNING"
    kinds = [e["type"] for e in history(c, unsure)]
    assert "TaskSubmitted" in kinds and "TaskSucceeded" not in kinds
    # Unknown and malformed tokens are refused with Step Functions' errors.
    with pytest.raises(ClientError) as e:
        c.send_task_success(taskToken=token[:-8] + "zzzzzzzz", output="{}")
    assert e.value.response["Error"]["Code"] == "TaskDoesNotExist"
    with pytest.raises(ClientError) as e:
        c.send_task_success(taskToken="not-a-token", output="{}")
    assert e.value.response["Error"]["Code"] == "InvalidToken"
    with pytest.raises(ClientError) as e:
        c.send_task_success(taskToken=token, output="{not json")
    assert e.value.response["Error"]["Code"] == "InvalidOutput"
    c.send_task_heartbeat(taskToken=token)
    c.send_task_success(taskToken=token, output=json.dumps({"approved": True, "by": "ann"}))
    d = wait_done(c, unsure)
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"delivered": "B"}
    # The same token again: the task is over.
    with pytest.raises(ClientError) as e:
        c.send_task_success(taskToken=token, output="{}")
    assert e.value.response["Error"]["Code"] in ("TaskTimedOut", "TaskDoesNotExist")
    # Rejected through the CLI.
    other = c.start_execution(stateMachineArn=arn, name="other", input='{"draft": "C", "confidence": 0.2}')["executionArn"]
    token = token_from(mailbox, "other")
    out = subprocess.run([binary(), "flows", "approve", token, "--output", '{"approved": false}', "--url", gateway.url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    d = wait_done(c, other)
    assert d["status"] == "FAILED" and d["error"] == "Rejected"
    # And approved through the CLI (the default output approves).
    third = c.start_execution(stateMachineArn=arn, name="third", input='{"draft": "D", "confidence": 0.1}')["executionArn"]
    out = subprocess.run([binary(), "flows", "approve", token_from(mailbox, "third"), "--url", gateway.url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert wait_done(c, third)["status"] == "SUCCEEDED"


def test_boto3_stepfunctions_api(gateway):
    c = sfn(gateway.url)
    definition = {"StartAt": "Hello", "States": {
        "Hello": {"Type": "Pass", "Parameters": {"greeting.$": "States.Format('Hello, {}!', $.name)"}, "Next": "Wait"},
        "Wait": {"Type": "Wait", "SecondsPath": "$.nope_or_zero", "Next": "Done"},
        "Done": {"Type": "Succeed"}}}
    definition["States"]["Wait"] = {"Type": "Pass", "Next": "Done"}
    arn = c.create_state_machine(name="hello", definition=json.dumps(definition), roleArn=ROLE, type="STANDARD")["stateMachineArn"]
    assert arn == "arn:aws:states:us-east-1:000000000000:stateMachine:hello"
    # The same definition again is the same machine; another one under the name is refused.
    assert c.create_state_machine(name="hello", definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"] == arn
    with pytest.raises(ClientError) as e:
        c.create_state_machine(name="hello", definition=json.dumps({"StartAt": "X", "States": {"X": {"Type": "Succeed"}}}), roleArn=ROLE)
    assert e.value.response["Error"]["Code"] == "StateMachineAlreadyExists"
    d = c.describe_state_machine(stateMachineArn=arn)
    assert d["name"] == "hello" and d["type"] == "STANDARD" and json.loads(d["definition"]) == definition
    assert any(m["stateMachineArn"] == arn for m in c.list_state_machines()["stateMachines"])
    # Invalid definitions name the state and the field.
    bad = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}
    with pytest.raises(ClientError) as e:
        c.create_state_machine(name="bad", definition=json.dumps(bad), roleArn=ROLE)
    assert e.value.response["Error"]["Code"] == "InvalidDefinition"
    assert "/States/A/Next" in e.value.response["Error"]["Message"]
    v = c.validate_state_machine_definition(definition=json.dumps(bad))
    assert v["result"] == "FAIL" and v["diagnostics"][0]["code"] == "MISSING_TRANSITION_TARGET"
    assert v["diagnostics"][0]["location"] == "/States/A/Next"
    assert c.validate_state_machine_definition(definition=json.dumps(definition))["result"] == "OK"
    with pytest.raises(ClientError) as e:
        c.create_state_machine(name="has space", definition=json.dumps(definition), roleArn=ROLE)
    assert e.value.response["Error"]["Code"] == "InvalidName"
    with pytest.raises(ClientError) as e:
        c.create_state_machine(name="lambda", roleArn=ROLE, definition=json.dumps(
            {"StartAt": "L", "States": {"L": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:f", "End": True}}}))
    assert e.value.response["Error"]["Code"] == "InvalidDefinition"

    # Executions: start, describe, list, history (pages, reverse order).
    run = c.start_execution(stateMachineArn=arn, name="first", input='{"name": "Ann"}')
    d = wait_done(c, run["executionArn"])
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"greeting": "Hello, Ann!"}
    assert d["name"] == "first" and d["stateMachineArn"] == arn and d["stopDate"] >= d["startDate"]
    # StartExecution is idempotent for the same name and input while running; a finished name is taken.
    with pytest.raises(ClientError) as e:
        c.start_execution(stateMachineArn=arn, name="first", input='{"name": "Bob"}')
    assert e.value.response["Error"]["Code"] == "ExecutionAlreadyExists"
    events = c.get_execution_history(executionArn=run["executionArn"])["events"]
    assert [e["type"] for e in events] == ["ExecutionStarted", "PassStateEntered", "PassStateExited", "PassStateEntered",
                                            "PassStateExited", "SucceedStateEntered", "SucceedStateExited", "ExecutionSucceeded"]
    assert events[0]["executionStartedEventDetails"]["input"] == '{"name":"Ann"}'
    assert events[2]["stateExitedEventDetails"]["name"] == "Hello"
    page = c.get_execution_history(executionArn=run["executionArn"], maxResults=3)
    assert [e["id"] for e in page["events"]] == [1, 2, 3] and page["nextToken"]
    page2 = c.get_execution_history(executionArn=run["executionArn"], maxResults=3, nextToken=page["nextToken"])
    assert [e["id"] for e in page2["events"]] == [4, 5, 6]
    rev = c.get_execution_history(executionArn=run["executionArn"], reverseOrder=True, maxResults=2)
    assert [e["id"] for e in rev["events"]] == [8, 7]
    lean = c.get_execution_history(executionArn=run["executionArn"], includeExecutionData=False)["events"]
    assert "input" not in lean[0]["executionStartedEventDetails"]
    for i in range(3):
        c.start_execution(stateMachineArn=arn, input=json.dumps({"name": f"n{i}"}))
    listed = c.list_executions(stateMachineArn=arn, maxResults=2)
    assert len(listed["executions"]) == 2 and listed["nextToken"]
    rest = c.list_executions(stateMachineArn=arn, nextToken=listed["nextToken"])["executions"]
    assert len(listed["executions"]) + len(rest) == 4
    # Stop a waiting execution.
    waiter = c.create_state_machine(name="waiter", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}))["stateMachineArn"]
    w = c.start_execution(stateMachineArn=waiter)["executionArn"]
    assert c.list_executions(stateMachineArn=waiter, statusFilter="RUNNING")["executions"][0]["executionArn"] == w
    c.stop_execution(executionArn=w, error="Operator", cause="not needed")
    d = c.describe_execution(executionArn=w)
    assert d["status"] == "ABORTED" and d["error"] == "Operator"
    assert history(c, w)[-1]["type"] == "ExecutionAborted"
    # Update, and unknown things.
    new = dict(definition, Comment="v2")
    rev_id = c.update_state_machine(stateMachineArn=arn, definition=json.dumps(new))["revisionId"]
    assert c.describe_state_machine(stateMachineArn=arn)["revisionId"] == rev_id
    for call, code in [
        (lambda: c.describe_state_machine(stateMachineArn=arn + "-missing"), "StateMachineDoesNotExist"),
        (lambda: c.describe_execution(executionArn=run["executionArn"] + "-missing"), "ExecutionDoesNotExist"),
        (lambda: c.describe_execution(executionArn="arn:aws:iam::1:role/x"), "InvalidArn"),
        (lambda: c.start_execution(stateMachineArn=arn, input="{not json"), "InvalidExecutionInput"),
    ]:
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == code
    # TestState runs one state.
    t = c.test_state(definition=json.dumps({"Type": "Choice", "Choices": [
        {"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Big"}], "Default": "Small"}), roleArn=ROLE, input='{"n": 5}')
    assert t["status"] == "SUCCEEDED" and t["nextState"] == "Big"
    t = c.test_state(definition=json.dumps({"Type": "Pass", "Parameters": {"x.$": "States.MathAdd($.n, 1)"}, "Next": "After"}),
                     roleArn=ROLE, input='{"n": 5}')
    assert json.loads(t["output"]) == {"x": 6} and t["nextState"] == "After"
    t = c.test_state(definition=json.dumps({"Type": "Task", "Resource": "arn:aws:states:::http:invoke", "Parameters": {"ApiEndpoint": "http://example.invalid"},
                                            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Handle"}], "End": True}),
                     roleArn=ROLE, input='{}', mock={"errorOutput": {"error": "Boom", "cause": "mocked"}})
    assert t["status"] == "CAUGHT_ERROR" and t["error"] == "Boom" and t["nextState"] == "Handle"
    # JSONata machines run too.
    ata = c.create_state_machine(name="ata", roleArn=ROLE, definition=json.dumps({
        "QueryLanguage": "JSONata", "StartAt": "Sum", "States": {"Sum": {
            "Type": "Pass", "Output": {"total": "{% $sum($states.input.prices) %}",
                                       "name": "{% $states.context.Execution.Name %}"}, "End": True}}}))["stateMachineArn"]
    d = wait_done(c, c.start_execution(stateMachineArn=ata, name="ata-1", input='{"prices": [1, 2.5]}')["executionArn"])
    assert json.loads(d["output"]) == {"total": 3.5, "name": "ata-1"}
    with pytest.raises(ClientError) as e:
        c.create_state_machine(name="ata-bad", roleArn=ROLE, definition=json.dumps({
            "QueryLanguage": "JSONata", "StartAt": "P", "States": {"P": {"Type": "Pass", "InputPath": "$.x", "End": True}}}))
    assert e.value.response["Error"]["Code"] == "InvalidDefinition" and "/States/P/InputPath" in e.value.response["Error"]["Message"]
    # An EXPRESS machine answers synchronously.
    express = c.create_state_machine(name="express", type="EXPRESS", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"fast": True}, "End": True}}}))["stateMachineArn"]
    r = c.start_sync_execution(stateMachineArn=express, input="{}")
    assert r["status"] == "SUCCEEDED" and json.loads(r["output"]) == {"fast": True}
    with pytest.raises(ClientError) as e:
        c.start_sync_execution(stateMachineArn=arn, input="{}")
    assert e.value.response["Error"]["Code"] == "StateMachineTypeNotSupported"
    c.delete_state_machine(stateMachineArn=express)
    with pytest.raises(ClientError) as e:
        c.describe_state_machine(stateMachineArn=express)
    assert e.value.response["Error"]["Code"] == "StateMachineDoesNotExist"


def test_signed_webhook_and_http_tasks(gateway):
    receiver = Receiver()
    try:
        c = sfn(gateway.url)
        arn = c.create_state_machine(name="hooks", roleArn=ROLE, definition=json.dumps({"StartAt": "Call", "States": {
            "Call": {"Type": "Task", "Resource": "arn:aws:states:::http:invoke",
                     "Parameters": {"ApiEndpoint.$": "States.Format('{}/work/h-{}/call', $.base, $.n)", "Method": "POST",
                                    "RequestBody": {"n.$": "$.n"}},
                     "ResultSelector": {"n.$": "$.ResponseBody.n", "status.$": "$.StatusCode"}, "ResultPath": "$.call", "Next": "Hook"},
            "Hook": {"Type": "Task", "Resource": "arn:modelgate:states:::webhook:publish",
                     "Parameters": {"Url.$": "States.Format('{}/hook', $.base)", "Body": {"done.$": "$.call"}},
                     "ResultPath": "$.hook", "End": True}}}))["stateMachineArn"]
        d = wait_done(c, c.start_execution(stateMachineArn=arn, input=json.dumps({"n": 4, "base": receiver.url}))["executionArn"])
        assert d["status"] == "SUCCEEDED", d
        out = json.loads(d["output"])
        assert out["call"] == {"n": 4, "status": "200"} and out["hook"] == {"StatusCode": 204}
        headers, body = receiver.hooks[0]
        assert json.loads(body) == {"done": {"n": 4, "status": "200"}}
        sig = {k.lower(): v for k, v in headers.items()}["modelgate-signature"]
        t, v1 = (part.split("=", 1)[1] for part in sig.split(","))
        expected = hmac.new(b"whsec-flows", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
        # An internal address outside workflows.http_allow is refused.
        guarded = c.create_state_machine(name="guarded", roleArn=ROLE, definition=json.dumps({"StartAt": "Call", "States": {
            "Call": {"Type": "Task", "Resource": "arn:aws:states:::http:invoke",
                     "Parameters": {"ApiEndpoint": "http://169.254.169.254/latest/meta-data", "Method": "GET"}, "End": True}}}))["stateMachineArn"]
        d = wait_done(c, c.start_execution(stateMachineArn=guarded)["executionArn"])
        assert d["status"] == "FAILED" and d["error"] == "States.Http.Forbidden", d
    finally:
        receiver.stop()


def test_child_executions_and_the_cli(gateway, tmp_path):
    c = sfn(gateway.url)
    child = c.create_state_machine(name="child", roleArn=ROLE, definition=json.dumps(
        {"StartAt": "Double", "States": {"Double": {"Type": "Pass", "Parameters": {"v.$": "States.MathAdd($.v, $.v)"}, "End": True}}}))["stateMachineArn"]
    parent_def = {"StartAt": "Fan", "States": {"Fan": {
        "Type": "Map", "ItemsPath": "$.values", "MaxConcurrency": 2,
        "ItemSelector": {"v.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "Run", "States": {"Run": {
            "Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2",
            "Parameters": {"StateMachineArn": child, "Input.$": "$"},
            "ResultSelector": {"v.$": "$.Output.v"}, "End": True}}},
        "End": True}}}
    path = tmp_path / "parent.json"
    path.write_text(json.dumps(parent_def))
    env_url = ["--url", gateway.url]
    out = subprocess.run([binary(), "flows", "deploy", str(path), "--name", "parent", *env_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "created" in out.stdout, out.stderr
    out = subprocess.run([binary(), "flows", "deploy", str(path), "--name", "parent", *env_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "updated" in out.stdout, out.stderr
    out = subprocess.run([binary(), "flows", "start", "parent", "--input", '{"values": [1, 2, 3]}', "--wait", *env_url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    exec_arn = out.stdout.splitlines()[0]
    assert "SUCCEEDED" in out.stdout and '[{"v":2},{"v":4},{"v":6}]' in out.stdout.replace(" ", "")
    out = subprocess.run([binary(), "flows", "history", exec_arn, *env_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "ExecutionStarted" in lines[0] and "ExecutionSucceeded" in lines[-1]
    assert sum("MapIterationStarted" in l for l in lines) == 3
    assert any("states:startExecution.sync:2" in l for l in lines)
    children = c.list_executions(stateMachineArn=child)["executions"]
    assert len(children) == 3 and all(e["status"] == "SUCCEEDED" for e in children)
    out = subprocess.run([binary(), "flows", "list", *env_url], capture_output=True, text=True, timeout=60)
    assert "parent" in out.stdout and "child" in out.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"StartAt": "A", "States": {"A": {"Type": "Wait", "End": true}}}')
    out = subprocess.run([binary(), "flows", "deploy", str(bad), "--name", "bad", *env_url], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "/States/A" in out.stderr


def test_machines_and_executions_belong_to_their_key(mailbox, tmp_path):
    admin = "mg-admin-" + uuid.uuid4().hex
    s = Server(config_text=flows_config(mailbox.port, extra='\n[auth]\nadmin_key_env = "MG_ADMIN"\n'),
               tmp_path=str(tmp_path), env={**ENV, "MG_ADMIN": admin})
    try:
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["states:*", "bedrock:InvokeModel"], "Resource": "*"}]}
        keys = []
        for body in ({"policies": [policy]}, {"policies": [policy]}, {}):
            r = requests.post(s.url + "/admin/keys", headers={"Authorization": f"Bearer {admin}"},
                              json=body, timeout=10)
            assert r.status_code in (200, 201), r.text
            keys.append(r.json())

        def as_key(k):
            return boto3.client("stepfunctions", endpoint_url=s.url, region_name="us-east-1",
                                aws_access_key_id=k["access_key_id"], aws_secret_access_key=k["secret_access_key"],
                                config=Config(retries={"max_attempts": 1}))
        alice, bob, plain = as_key(keys[0]), as_key(keys[1]), as_key(keys[2])
        # A key made without policies may call models, nothing else: least privilege.
        with pytest.raises(ClientError) as e:
            plain.list_state_machines()
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        arn = alice.create_state_machine(name="mine", roleArn=ROLE, definition=json.dumps(
            {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
        run = alice.start_execution(stateMachineArn=arn)["executionArn"]
        with pytest.raises(ClientError) as e:
            bob.describe_state_machine(stateMachineArn=arn)
        assert e.value.response["Error"]["Code"] == "StateMachineDoesNotExist"
        with pytest.raises(ClientError) as e:
            bob.describe_execution(executionArn=run)
        assert e.value.response["Error"]["Code"] == "ExecutionDoesNotExist"
        assert bob.list_state_machines()["stateMachines"] == []
        assert wait_done(alice, run)["status"] == "SUCCEEDED"
        # No credentials: AWS's authentication error.
        anon = boto3.client("stepfunctions", endpoint_url=s.url, region_name="us-east-1",
                            aws_access_key_id="AKIDNOBODY", aws_secret_access_key="x",
                            config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as e:
            anon.list_state_machines()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)
    finally:
        s.stop()


CRASHY = {
    "StartAt": "Wait",
    "States": {
        "Wait": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Call"},
        "Call": {
            "Type": "Task", "Resource": "arn:aws:states:::http:invoke",
            "Parameters": {"ApiEndpoint.$": "States.Format('{}/work/{}/call', $.base, $$.Execution.Name)",
                           "Method": "POST", "RequestBody": {"n.$": "$.n"}},
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 5, "BackoffRate": 1}],
            "ResultSelector": {"got.$": "$.ResponseBody.n"}, "ResultPath": "$.call", "Next": "Branch"},
        "Branch": {"Type": "Choice", "Choices": [{"Variable": "$.approve", "BooleanEquals": True, "Next": "Approve"}], "Default": "Done"},
        "Approve": {
            "Type": "Task", "Resource": "arn:aws:states:::http:invoke.waitForTaskToken",
            "Parameters": {"ApiEndpoint.$": "States.Format('{}/work/{}/token', $.base, $$.Execution.Name)",
                           "Method": "POST", "RequestBody": {"token.$": "$$.Task.Token"}},
            "ResultPath": "$.approval", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    },
}


def crash_run(mailbox, tmp_path, store="", executions=200, kills=2):
    receiver = Receiver()
    text = flows_config(mailbox.port, extra=store)
    env = {**ENV, "MODELGATE_STATE_DB": str(tmp_path / "crash-state.db")}
    server = Server(config_text=text, tmp_path=str(tmp_path), env=env)
    try:
        c = sfn(server.url)
        arn = c.create_state_machine(name="crashy", definition=json.dumps(CRASHY), roleArn=ROLE)["stateMachineArn"]
        arns = {}
        for n in range(executions):
            name = f"run-{n}"
            arns[name] = c.start_execution(stateMachineArn=arn, name=name, input=json.dumps(
                {"n": n, "wait": 1 + n % 3, "approve": n % 2 == 0, "base": receiver.url}))["executionArn"]
        answered = set()
        for k in range(kills):
            time.sleep(1.2 + 0.6 * k)
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=10)
            server.log.close()
            # The same state, another replica (port): it takes over once the lease lapses.
            server = Server(config_text=text, tmp_path=str(tmp_path), env=env)
            c = sfn(server.url)
        deadline = time.time() + 150
        pending = dict(arns)
        while pending and time.time() < deadline:
            with receiver.lock:
                tokens = dict(receiver.tokens)
            for name, token in tokens.items():
                if name not in answered:
                    n = int(name.split("-")[1])
                    c.send_task_success(taskToken=token, output=json.dumps({"ok": n}))
                    answered.add(name)
            for name, a in list(pending.items()):
                if c.describe_execution(executionArn=a)["status"] != "RUNNING":
                    pending.pop(name)
            time.sleep(0.2)
        assert not pending, f"{len(pending)} executions did not finish: {sorted(pending)[:5]}\n{server.logs()[-3000:]}"
        reruns = 0
        for name, a in arns.items():
            n = int(name.split("-")[1])
            d = c.describe_execution(executionArn=a)
            assert d["status"] == "SUCCEEDED", (name, d)
            out = json.loads(d["output"])
            assert out["call"] == {"got": n}
            if n % 2 == 0:
                assert out["approval"] == {"ok": n}
            events = history(c, a)
            succeeded = [e for e in events if e["type"] == "TaskSucceeded"]
            assert len(succeeded) == (2 if n % 2 == 0 else 1), (name, [e["type"] for e in events])
            call_done = succeeded[0]["timestamp"].timestamp()
            with receiver.lock:
                calls = [t for (nm, kind, t) in receiver.log if nm == name and kind == "call"]
                token_sends = [t for (nm, kind, t) in receiver.log if nm == name and kind == "token"]
            # No completed task ran again: nothing reached the service after its success was saved.
            assert calls and max(calls) <= call_done + 0.002, (name, calls, call_done)
            scheduled = sum(1 for e in events if e["type"] == "TaskScheduled" and
                            "call" in e["taskScheduledEventDetails"]["parameters"])
            reruns += len(calls) - scheduled
            if n % 2 == 0:
                # The token went out at least once; once its sending was saved (TaskSubmitted),
                # it was not sent again. (An answer can also beat the saving of the send.)
                submitted = [e for e in events if e["type"] == "TaskSubmitted"]
                assert token_sends and len(submitted) <= 1
                if submitted:
                    assert max(token_sends) <= submitted[0]["timestamp"].timestamp() + 0.002
        print(f"crash run: {reruns} task requests repeated after a crash (in flight when killed)")
    finally:
        server.stop()
        receiver.stop()


def test_killed_servers_finish_every_execution_and_repeat_no_completed_task(mailbox, tmp_path):
    crash_run(mailbox, tmp_path)


def test_killed_servers_finish_every_execution_on_postgres(mailbox, tmp_path):
    db = fresh_postgres()
    try:
        crash_run(mailbox, tmp_path, store=f'\n[store]\npostgres_url = "postgres://postgres@127.0.0.1:5432/{db}"\n')
    finally:
        drop_postgres(db)
