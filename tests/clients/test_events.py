"""The event bus through the boto3 `events` client: rules with event patterns, targets that call
the embedded model, a workflow, a webhook and another bus, retries and the dead-letter queue,
and every event stored with its deliveries (issue 23, item 1)."""
import hashlib
import hmac
import json
import os
import threading
import subprocess
import time

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import GATEWAY_CONFIG, PostReceiver, Server, binary

ACCOUNT = "000000000000"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MODEL_ARN = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:foundation-model/{MODEL}"
DLQ = f"arn:aws:sqs:us-east-1:{ACCOUNT}:analysis-dlq"

CONFIG = GATEWAY_CONFIG + """
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
backoff_base = "100ms"
backoff_max = "300ms"
webhook_secret_env = "MG_TEST_WEBHOOK_SECRET"
webhook_allow = ["127.0.0.1/32"]

[[hooks]]
name = "github"
scheme = "github"
secret_env = "MG_TEST_HOOK_SECRET"
source = "com.github"
detail_type_header = "x-github-event"

[[hooks]]
name = "billing"
scheme = "stripe"
secret_env = "MG_TEST_HOOK_SECRET"
source = "com.stripe"
detail_type = "StripeEvent"
delivery_id_header = "idempotency-key"
"""

HOOK_SECRET = "hook-secret-123"
ENV = {"MG_TEST_UPSTREAM_KEY": "unused", "MG_TEST_WEBHOOK_SECRET": "whsec-events",
       "MG_TEST_HOOK_SECRET": HOOK_SECRET}

# The seed's contract review: the document named by the event, analysed by the model.
CONTRACT_TEMPLATE = json.dumps({
    "system": [{"text": "You review contracts. Answer in one short sentence."}],
    "messages": [{"role": "user", "content": [
        {"text": "Summarise the obligations in the contract <document>: <text>"}]}],
    "inferenceConfig": {"maxTokens": 16, "temperature": 0},
})


@pytest.fixture(scope="module")
def incoming(tmp_path_factory):
    return tmp_path_factory.mktemp("incoming")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, incoming):
    watch = f"""
[[watch]]
name = "incoming"
path = "{incoming}"
pattern = "*.csv"
interval = "200ms"
settle = "300ms"
"""
    s = Server(config_text=CONFIG + watch, tmp_path=str(tmp_path_factory.mktemp("events")), env=ENV)
    yield s
    s.stop()


def events(url):
    return boto3.client(
        "events", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}))


def stored(url, **params):
    r = requests.get(url + "/admin/events", params={"limit": 1000, **params}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def wait_delivery(url, event_id, done=("succeeded", "dead", "failed"), timeout=90):
    """The stored event once every delivery has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in stored(url) if e["id"] == event_id]
        if found and all(d.get("state") in done for d in found[0]["deliveries"]):
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"the deliveries of {event_id} did not end: {found}")


def put(client, detail_type, detail, source="com.enterprise.application", **kw):
    r = client.put_events(Entries=[{"Source": source, "DetailType": detail_type,
                                    "Detail": json.dumps(detail), **kw}])
    assert r["FailedEntryCount"] == 0, r
    return r["Entries"][0]["EventId"]


def event_jobs(url):
    r = requests.get(url + "/admin/jobs", params={"kind": "event", "limit": 1000}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_a_matching_event_calls_the_model_and_an_unmatched_one_calls_nothing(gateway):
    c = events(gateway.url)
    pattern = {"source": ["com.enterprise.application"], "detail-type": ["DocumentUploaded"]}
    arn = c.put_rule(Name="documents", EventPattern=json.dumps(pattern),
                     Description="Contracts go to the model")["RuleArn"]
    assert arn == f"arn:aws:events:us-east-1:{ACCOUNT}:rule/documents"
    c.put_targets(Rule="documents", Targets=[{
        "Id": "contract-review", "Arn": MODEL_ARN,
        "InputTransformer": {"InputPathsMap": {"document": "$.detail.document", "text": "$.detail.text"},
                             "InputTemplate": CONTRACT_TEMPLATE}}])
    d = c.describe_rule(Name="documents")
    assert (d["State"], json.loads(d["EventPattern"]), d["Description"]) == ("ENABLED", pattern, "Contracts go to the model")
    assert c.list_targets_by_rule(Rule="documents")["Targets"][0]["Id"] == "contract-review"
    jobs_before = len(event_jobs(gateway.url))

    doc = put(c, "DocumentUploaded", {"document": "supply-2026.pdf", "text": "The supplier delivers 100 units monthly."})
    other = put(c, "CustomerInteraction", {"channel": "chat"})
    e = wait_delivery(gateway.url, doc)
    assert e["event"]["detail-type"] == "DocumentUploaded" and e["event"]["account"] == ACCOUNT
    [delivery] = e["deliveries"]
    assert (delivery["rule"], delivery["target"], delivery["state"], delivery["status"]) == \
        ("documents", "contract-review", "succeeded", 200)
    # The model got the rendered contract prompt and answered it.
    assert delivery["input"]["messages"][0]["content"][0]["text"] == \
        "Summarise the obligations in the contract supply-2026.pdf: The supplier delivers 100 units monthly."
    job = requests.get(gateway.url + f"/admin/jobs/{delivery['job']}", timeout=10).json()
    assert job["request"]["path"].startswith("/model/anthropic") and job["request"]["path"].endswith("/converse")
    answer = job["result"]["body"]["output"]["message"]["content"][0]["text"]
    assert answer.strip()
    assert job["result"]["body"]["usage"]["outputTokens"] > 0

    # The unmatched event is stored with no deliveries, and no call was made for it.
    [unmatched] = [x for x in stored(gateway.url) if x["id"] == other]
    assert unmatched["deliveries"] == []
    assert len(event_jobs(gateway.url)) == jobs_before + 1

    # Filters: by detail type.
    only = stored(gateway.url, detail_type="CustomerInteraction")
    assert other in [x["id"] for x in only] and doc not in [x["id"] for x in only]


def test_a_failing_target_lands_in_the_dead_letter_queue_after_its_retries(gateway):
    c = events(gateway.url)
    c.put_rule(Name="analysis", EventPattern=json.dumps({"detail-type": ["DataAnalysisRequest"]}))
    c.put_targets(Rule="analysis", Targets=[
        {"Id": "broken", "Arn": "modelgate:model/broken-model", "InputPath": "$.detail.question",
         "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 600},
         "DeadLetterConfig": {"Arn": DLQ}},
        # A request the model refuses (400): retrying would not change it, so it goes to the
        # dead-letter queue after one attempt, as EventBridge does.
        {"Id": "refused", "Arn": MODEL_ARN, "Input": json.dumps({"messages": "not a list"}),
         "DeadLetterConfig": {"Arn": DLQ}}])
    eid = put(c, "DataAnalysisRequest", {"question": "How did Q3 sales go?"})
    e = wait_delivery(gateway.url, eid)
    by_target = {d["target"]: d for d in e["deliveries"]}
    assert by_target["broken"]["state"] == "dead"
    assert by_target["broken"]["attempts"] == 3, by_target["broken"]
    assert by_target["broken"]["dead_letter"] == DLQ
    assert by_target["broken"]["last_error"]
    assert (by_target["refused"]["state"], by_target["refused"]["attempts"], by_target["refused"]["status"]) == ("dead", 1, 400)
    dead = requests.get(gateway.url + "/admin/jobs", params={"kind": "event", "status": "dead", "limit": 1000},
                        timeout=10).json()["data"]
    assert {by_target["broken"]["job"], by_target["refused"]["job"]} <= {j["id"] for j in dead}


def test_workflow_webhook_and_bus_targets(gateway):
    c = events(gateway.url)
    sfn = boto3.client("stepfunctions", endpoint_url=gateway.url, region_name="us-east-1",
                       aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                       config=Config(retries={"max_attempts": 1}))
    machine = sfn.create_state_machine(
        name="on-ticket", roleArn=f"arn:aws:iam::{ACCOUNT}:role/x",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
    hook = PostReceiver()
    try:
        c.put_rule(Name="tickets", EventPattern=json.dumps(
            {"source": [{"prefix": "com.enterprise."}], "detail-type": ["TicketOpened"],
             "detail": {"priority": [{"numeric": [">=", 3]}]}}))
        c.put_targets(Rule="tickets", Targets=[
            {"Id": "flow", "Arn": machine, "InputPath": "$.detail"},
            {"Id": "hook", "Arn": hook.url + "/tickets",
             "InputTransformer": {"InputPathsMap": {"id": "$.detail.id", "rule": "$.source"},
                                  "InputTemplate": '{"ticket": <id>, "text": "Ticket <id> from <rule>"}'}},
            {"Id": "audit-bus", "Arn": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/audit"}])
        # On the audit bus, a rule forwards to the same webhook.
        c.put_rule(Name="audit-all", EventBusName="audit", EventPattern=json.dumps({"detail-type": [{"exists": True}]}))
        c.put_targets(Rule="audit-all", EventBusName="audit", Targets=[
            {"Id": "audit-hook", "Arn": hook.url + "/audit", "InputPath": "$.detail"}])
        assert [r["Name"] for r in c.list_rules(EventBusName="audit")["Rules"]] == ["audit-all"]

        low = put(c, "TicketOpened", {"id": 7, "priority": 1}, source="com.enterprise.helpdesk")
        eid = put(c, "TicketOpened", {"id": 42, "priority": 5}, source="com.enterprise.helpdesk")
        e = wait_delivery(gateway.url, eid)
        assert {d["target"]: d["state"] for d in e["deliveries"]} == \
            {"flow": "succeeded", "hook": "succeeded", "audit-bus": "succeeded"}
        assert [x for x in stored(gateway.url) if x["id"] == low][0]["deliveries"] == []
        # The workflow ran with the event's detail as its input.
        runs = sfn.list_executions(stateMachineArn=machine)["executions"]
        assert len(runs) == 1
        out = sfn.describe_execution(executionArn=runs[0]["executionArn"])
        assert json.loads(out["output"]) == {"id": 42, "priority": 5}
        # The forwarded event reached the audit bus's rule, which called the webhook too.
        deadline = time.time() + 30
        while time.time() < deadline and len(hook.bodies) < 2:
            time.sleep(0.1)
        bodies = [json.loads(b) for b in hook.bodies]
        assert {"ticket": 42, "text": "Ticket 42 from com.enterprise.helpdesk"} in bodies
        assert {"id": 42, "priority": 5} in bodies
        audit = stored(gateway.url, bus="audit")
        assert len(audit) == 1 and audit[0]["deliveries"][0]["rule"] == "audit-all"
    finally:
        hook.stop()


def test_rules_lifecycle_and_bad_input(gateway):
    c = events(gateway.url)
    with pytest.raises(ClientError) as e:
        c.put_rule(Name="bad", EventPattern='{"source": "not-a-list"}')
    assert e.value.response["Error"]["Code"] == "InvalidEventPatternException"
    assert "Event pattern is not valid" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        c.put_rule(Name="bad", EventPattern='{"n": [{"numeric": [">", 10, "<", 5]}]}')
    assert e.value.response["Error"]["Code"] == "InvalidEventPatternException"
    with pytest.raises(ClientError) as e:
        c.put_rule(Name="bad name!", EventPattern='{"source": ["a"]}')
    assert e.value.response["Error"]["Code"] == "ValidationException"

    c.put_rule(Name="life", EventPattern=json.dumps({"source": ["life.cycle"]}))
    with pytest.raises(ClientError) as e:
        c.put_targets(Rule="life", Targets=[{"Id": "t", "Arn": MODEL_ARN, "InputTransformer": {
            "InputPathsMap": {"x": "$.detail.x"}, "InputTemplate": '{"broken": <x>'}}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        c.put_targets(Rule="life", Targets=[{"Id": "t", "Arn": "arn:aws:sqs:us-east-1:0:q"}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        c.put_targets(Rule="life", Targets=[{"Id": "t", "Arn": "http://169.254.169.254/latest"}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        c.put_targets(Rule="life", Targets=[{"Id": "t", "Arn": "https://127.0.0.1/x",
                                             "HttpParameters": {"HeaderParameters": {"x-a": "1"}}}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "HttpParameters" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        c.put_targets(Rule="nope", Targets=[{"Id": "t", "Arn": MODEL_ARN}])
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    c.put_targets(Rule="life", Targets=[{"Id": f"t{i}", "Arn": MODEL_ARN, "Input": '"hi"'} for i in range(5)])
    with pytest.raises(ClientError) as e:
        c.put_targets(Rule="life", Targets=[{"Id": "t5", "Arn": MODEL_ARN}])
    assert e.value.response["Error"]["Code"] == "LimitExceededException"

    # A disabled rule delivers nothing; an enabled one does again.
    c.disable_rule(Name="life")
    assert c.describe_rule(Name="life")["State"] == "DISABLED"
    off = put(c, "X", {}, source="life.cycle")
    assert [x for x in stored(gateway.url) if x["id"] == off][0]["deliveries"] == []
    with pytest.raises(ClientError) as e:
        c.delete_rule(Name="life")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    r = c.remove_targets(Rule="life", Ids=[f"t{i}" for i in range(5)] + ["missing"])
    assert r["FailedEntryCount"] == 1 and r["FailedEntries"][0]["TargetId"] == "missing"
    c.delete_rule(Name="life")
    with pytest.raises(ClientError) as e:
        c.describe_rule(Name="life")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"

    # PutEvents refuses bad entries one by one, never the batch.
    r = c.put_events(Entries=[
        {"Source": "a", "DetailType": "ok", "Detail": "{}"},
        {"Source": "a", "DetailType": "big", "Detail": json.dumps({"x": "a" * (256 * 1024)})},
        {"Source": "a", "DetailType": "not-json", "Detail": "{"},
        {"DetailType": "no-source", "Detail": "{}"},
    ])
    assert r["FailedEntryCount"] == 3
    assert "EventId" in r["Entries"][0]
    assert [x.get("ErrorCode") for x in r["Entries"][1:]] == ["ValidationException", "InvalidArgument", "InvalidArgument"]

    # TestEventPattern.
    event = {"id": "1", "account": ACCOUNT, "source": "com.enterprise.application", "time": "2026-12-07T00:00:00Z",
             "region": "us-east-1", "resources": [], "detail-type": "DocumentUploaded", "detail": {"pages": 12}}
    ok = c.test_event_pattern(EventPattern=json.dumps({"detail": {"pages": [{"numeric": [">", 10]}]}}),
                              Event=json.dumps(event))
    assert ok["Result"] is True
    no = c.test_event_pattern(EventPattern=json.dumps({"detail": {"pages": [{"numeric": [">", 20]}]}}),
                              Event=json.dumps(event))
    assert no["Result"] is False
    with pytest.raises(ClientError) as e:
        c.test_event_pattern(EventPattern='{"detail": []}', Event=json.dumps(event))
    assert e.value.response["Error"]["Code"] == "InvalidEventPatternException"


def test_the_cli(gateway):
    env = {**os.environ, "MODELGATE_URL": gateway.url}
    c = events(gateway.url)
    c.put_rule(Name="cli-rule", EventPattern=json.dumps({"source": ["cli.test"]}))
    out = subprocess.run([binary(), "events", "put", "--source", "cli.test", "--detail-type", "Ping",
                          "--detail", '{"n": 1}'], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    eid = out.stdout.strip()
    assert [x for x in stored(gateway.url) if x["id"] == eid][0]["event"]["detail"] == {"n": 1}
    rules = subprocess.run([binary(), "events", "rules"], env=env, capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0 and "cli-rule\tENABLED" in rules.stdout
    tail = subprocess.run([binary(), "events", "tail"], env=env, capture_output=True, text=True, timeout=60)
    assert tail.returncode == 0 and eid in tail.stdout
    bad = subprocess.run([binary(), "events", "put", "--source", "s", "--detail-type", "d", "--detail", "[1]"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "InvalidArgument" in bad.stderr


def test_inbound_webhooks_are_verified_and_accepted_once(gateway):
    c = events(gateway.url)
    hook = PostReceiver()
    try:
        c.put_rule(Name="github-push", EventPattern=json.dumps({"source": ["com.github"], "detail-type": ["push"]}))
        c.put_targets(Rule="github-push", Targets=[{"Id": "h", "Arn": hook.url + "/push", "InputPath": "$.detail.ref"}])
        body = json.dumps({"ref": "refs/heads/main", "commits": [{"id": "abc"}]}).encode()
        sig = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "x-hub-signature-256": sig,
                   "x-github-event": "push", "x-github-delivery": "delivery-7"}
        # The sender delivers the same webhook three times, two of them at once.
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(
            requests.post(gateway.url + "/hooks/github", data=body, headers=headers, timeout=10))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answers.append(requests.post(gateway.url + "/hooks/github", data=body, headers=headers, timeout=10))
        assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
        ids = {a.json()["EventId"] for a in answers}
        assert len(ids) == 1
        [eid] = ids
        e = wait_delivery(gateway.url, eid)
        assert (e["event"]["source"], e["event"]["detail-type"]) == ("com.github", "push")
        assert e["event"]["detail"]["commits"] == [{"id": "abc"}]
        assert [d["state"] for d in e["deliveries"]] == ["succeeded"]
        time.sleep(1)  # a second delivery, were there one, would have arrived by now
        assert [json.loads(b) for b in hook.bodies] == ["refs/heads/main"]
        assert len([x for x in stored(gateway.url, source="com.github")]) == 1

        # A bad signature, a missing one, an unknown receiver: refused, nothing stored.
        bad = dict(headers, **{"x-hub-signature-256": "sha256=" + "0" * 64, "x-github-delivery": "delivery-8"})
        assert requests.post(gateway.url + "/hooks/github", data=body, headers=bad, timeout=10).status_code == 401
        tampered = requests.post(gateway.url + "/hooks/github", data=body + b" ", headers=dict(headers, **{"x-github-delivery": "delivery-9"}), timeout=10)
        assert tampered.status_code == 401
        missing = {k: v for k, v in headers.items() if k != "x-hub-signature-256"}
        assert requests.post(gateway.url + "/hooks/github", data=body, headers=missing, timeout=10).status_code == 401
        assert requests.post(gateway.url + "/hooks/nope", data=body, headers=headers, timeout=10).status_code == 404
        assert len(stored(gateway.url, source="com.github")) == 1

        # Stripe's timestamped signature; a stale one is refused.
        payload = json.dumps({"id": "evt_1", "type": "invoice.paid"}).encode()
        ts = str(int(time.time()))
        v1 = hmac.new(HOOK_SECRET.encode(), ts.encode() + b"." + payload, hashlib.sha256).hexdigest()
        ok = requests.post(gateway.url + "/hooks/billing", data=payload, timeout=10,
                           headers={"stripe-signature": f"t={ts},v1={v1}", "idempotency-key": "evt_1"})
        assert ok.status_code == 202, ok.text
        [billing] = [x for x in stored(gateway.url, source="com.stripe")]
        assert billing["event"]["detail-type"] == "StripeEvent" and billing["event"]["detail"]["type"] == "invoice.paid"
        old = str(int(time.time()) - 3600)
        v1 = hmac.new(HOOK_SECRET.encode(), old.encode() + b"." + payload, hashlib.sha256).hexdigest()
        stale = requests.post(gateway.url + "/hooks/billing", data=payload, timeout=10,
                              headers={"stripe-signature": f"t={old},v1={v1}", "idempotency-key": "evt_2"})
        assert stale.status_code == 401
    finally:
        hook.stop()


def test_a_csv_dropped_into_a_watched_directory_is_processed_once(gateway, incoming):
    c = events(gateway.url)
    hook = PostReceiver()
    try:
        c.put_rule(Name="new-files", EventPattern=json.dumps(
            {"source": ["modelgate.watch"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": ["incoming"]}}}))
        c.put_targets(Rule="new-files", Targets=[{"Id": "analyse", "Arn": hook.url + "/analyse", "InputTransformer": {
            "InputPathsMap": {"key": "$.detail.object.key", "n": "$.detail.record_count"},
            "InputTemplate": '{"file": "<key>", "record_count": <n>}'}}])
        rows = ["region,month,sales"] + [f"r{i},2026-{i % 12 + 1:02d},{i * 10}" for i in range(25)]
        # Written in two steps, as a slow copy would: announced once, when it is complete.
        part = incoming / "sales-q3.csv"
        part.write_text("\n".join(rows[:10]) + "\n")
        time.sleep(0.1)
        part.write_text("\n".join(rows) + "\n")
        (incoming / "notes.txt").write_text("not a csv\n")
        deadline = time.time() + 30
        while time.time() < deadline and not hook.bodies:
            time.sleep(0.1)
        time.sleep(1.5)  # several more scans: nothing is announced twice
        assert [json.loads(b) for b in hook.bodies] == [{"file": "sales-q3.csv", "record_count": 25}]
        announced = stored(gateway.url, source="modelgate.watch")
        assert [e["event"]["detail"]["object"]["key"] for e in announced] == ["sales-q3.csv"]
        assert announced[0]["event"]["detail"]["object"]["size"] == part.stat().st_size
    finally:
        hook.stop()


def test_archive_and_replay(gateway):
    import datetime
    c = events(gateway.url)
    hook = PostReceiver()
    utc = datetime.timezone.utc
    bus_arn = f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/default"

    def bodies():
        return [json.loads(b) for b in hook.bodies]

    def wait_for(cond, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            time.sleep(0.1)
        raise AssertionError(f"not reached; webhook bodies: {bodies()}")

    try:
        archive = c.create_archive(ArchiveName="orders", EventSourceArn=bus_arn, RetentionDays=0,
                                   EventPattern=json.dumps({"source": ["com.shop"]}))["ArchiveArn"]
        with pytest.raises(ClientError) as e:
            c.create_archive(ArchiveName="orders", EventSourceArn=bus_arn)
        assert e.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
        with pytest.raises(ClientError) as e:
            c.create_archive(ArchiveName="bad", EventSourceArn=bus_arn, EventPattern='{"source": "x"}')
        assert e.value.response["Error"]["Code"] == "InvalidEventPatternException"
        rule_arn = c.put_rule(Name="orders", EventPattern=json.dumps({"source": ["com.shop"]}))["RuleArn"]
        c.put_targets(Rule="orders", Targets=[{"Id": "h", "Arn": hook.url + "/orders", "InputPath": "$.detail"}])
        c.put_rule(Name="orders-audit", EventPattern=json.dumps({"source": ["com.shop"]}))
        c.put_targets(Rule="orders-audit", Targets=[{"Id": "a", "Arn": hook.url + "/audit", "InputTransformer": {
            "InputPathsMap": {"n": "$.detail.n"}, "InputTemplate": '{"audit": <n>}'}}])

        t0 = time.time() - 1
        for n in (1, 2, 3):
            put(c, "OrderPlaced", {"n": n}, source="com.shop")
        put(c, "Other", {"n": 99}, source="com.elsewhere")
        wait_for(lambda: len(bodies()) == 6)
        time.sleep(0.05)
        t1 = time.time()
        d = c.describe_archive(ArchiveName="orders")
        assert (d["EventCount"], d["State"], d["RetentionDays"]) == (3, "ENABLED", 0)
        assert d["SizeBytes"] > 0
        assert [a["ArchiveName"] for a in c.list_archives(NamePrefix="ord")["Archives"]] == ["orders"]

        # Replay to the "orders" rule only: its target gets the three orders again, the audit
        # rule nothing; the replayed events carry replay-name.
        start = datetime.datetime.fromtimestamp(t0, tz=utc)
        end = datetime.datetime.fromtimestamp(t1, tz=utc)
        r = c.start_replay(ReplayName="again", EventSourceArn=archive, EventStartTime=start, EventEndTime=end,
                           Destination={"Arn": bus_arn, "FilterArns": [rule_arn]})
        assert r["State"] == "STARTING"
        deadline = time.time() + 30
        while c.describe_replay(ReplayName="again")["State"] not in ("COMPLETED", "FAILED") and time.time() < deadline:
            time.sleep(0.1)
        done = c.describe_replay(ReplayName="again")
        assert done["State"] == "COMPLETED", done
        assert done["EventSourceArn"] == archive and done["Destination"]["Arn"] == bus_arn
        wait_for(lambda: len(bodies()) == 9)
        time.sleep(0.5)
        got = bodies()
        assert sorted(b["n"] for b in got if "n" in b) == [1, 1, 2, 2, 3, 3]
        assert sorted(b["audit"] for b in got if "audit" in b) == [1, 2, 3]
        replayed = [x for x in stored(gateway.url, source="com.shop") if x["event"].get("replay-name") == "again"]
        assert sorted(x["event"]["detail"]["n"] for x in replayed) == [1, 2, 3]
        # Replayed events are not archived again.
        assert c.describe_archive(ArchiveName="orders")["EventCount"] == 3
        assert [x["ReplayName"] for x in c.list_replays(State="COMPLETED")["Replays"]] == ["again"]

        # Bad requests.
        future = datetime.datetime.fromtimestamp(time.time() + 3600, tz=utc)
        for kw, code in [
            ({"ReplayName": "again", "EventEndTime": end}, "ResourceAlreadyExistsException"),
            ({"ReplayName": "later", "EventEndTime": future}, "ValidationException"),
            ({"ReplayName": "backwards", "EventEndTime": start - datetime.timedelta(seconds=5)}, "ValidationException"),
        ]:
            with pytest.raises(ClientError) as e:
                c.start_replay(EventSourceArn=archive, EventStartTime=start, Destination={"Arn": bus_arn}, **kw)
            assert e.value.response["Error"]["Code"] == code, kw
        with pytest.raises(ClientError) as e:
            c.cancel_replay(ReplayName="again")
        assert e.value.response["Error"]["Code"] == "IllegalStatusException"

        # The CLI replays to every rule and waits for the end.
        env = {**os.environ, "MODELGATE_URL": gateway.url}
        out = subprocess.run([binary(), "events", "replay", "orders", "--since", "10m", "--name", "cli-replay"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "cli-replay\tCOMPLETED" in out.stdout
        wait_for(lambda: len(bodies()) == 15)

        c.delete_archive(ArchiveName="orders")
        with pytest.raises(ClientError) as e:
            c.describe_archive(ArchiveName="orders")
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        hook.stop()
