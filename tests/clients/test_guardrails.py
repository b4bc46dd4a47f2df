"""Guardrails through the real binary and real clients: boto3's `bedrock` client manages
guardrails (create, version, read, list, update, delete, bad input), boto3's `bedrock-runtime`
applies them (ApplyGuardrail assessments that botocore parses; Converse and ConverseStream with
`guardrailConfig`; InvokeModel with the guardrail headers), and the openai SDK gets the
guardrails the config attaches. Streams come from the test kit's mock upstream, which sends an
SSN and a card number split across chunks: the raw bytes delivered never hold either value.
"""
import json
import re

import boto3
import botocore.exceptions
import openai
import pytest
import requests
from botocore.config import Config

from conftest import Server
from test_upstreams import UPSTREAM_ENV, Mock, mock_providers

SSN = "517-42-8093"
CARD = "4556737586899855"
EMAIL = "jane.roe@example.com"
FILLER = ("Thanks for waiting while I looked this up in the records we keep for every customer "
          "account on file here. ")
LEAKY = FILLER * 2 + f"The customer's social security number is {SSN} and the card on file is {CARD}, " \
        f"email {EMAIL}. " + FILLER * 2


def config(mock):
    return f"""
[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

{mock_providers(mock)}
[[models]]
id = "chat"
provider = "mock-openai"
upstream_id = "up-chat"

[[models]]
id = "plain"
provider = "mock-openai"
upstream_id = "up-plain"

[[models]]
id = "anthropic.claude-3-haiku-20240307-v1:0"
provider = "mock-anthropic"
upstream_id = "up-claude"

[guardrails]
stream_window_chars = 40
stream_overlap_chars = 32

[[guardrails.define]]
id = "pii"
[guardrails.define.definition]
name = "pii-block"
blockedInputMessaging = "Sorry, I cannot take personal data."
blockedOutputsMessaging = "Sorry, the answer contained personal data."
[guardrails.define.definition.sensitiveInformationPolicyConfig]
piiEntitiesConfig = [
  {{ type = "US_SOCIAL_SECURITY_NUMBER", action = "BLOCK" }},
  {{ type = "CREDIT_DEBIT_CARD_NUMBER", action = "BLOCK" }},
]

[[guardrails.define]]
id = "mask"
[guardrails.define.definition]
name = "pii-mask"
blockedInputMessaging = "Blocked."
blockedOutputsMessaging = "Blocked."
[guardrails.define.definition.sensitiveInformationPolicyConfig]
piiEntitiesConfig = [
  {{ type = "US_SOCIAL_SECURITY_NUMBER", action = "ANONYMIZE" }},
  {{ type = "CREDIT_DEBIT_CARD_NUMBER", action = "ANONYMIZE" }},
  {{ type = "EMAIL", action = "ANONYMIZE" }},
]

[[guardrails.attach]]
guardrail = "pii"
models = ["chat"]
routes = ["/v1/chat/completions"]
"""


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    server = Server(config_text=config(mock), tmp_path=str(tmp_path_factory.mktemp("guardrails")),
                    env=UPSTREAM_ENV)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def client(gw, service):
    return boto3.client(service, endpoint_url=gw.url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="y",
                        config=Config(retries={"total_max_attempts": 1}))


DEFINITION = dict(
    description="PII, a project name, a denied topic",
    topicPolicyConfig={"topicsConfig": [{
        "name": "Investment advice", "type": "DENY",
        "definition": "Recommendations or guidance on investing money: which stocks, funds, bonds or cryptocurrencies to buy or sell.",
        "examples": ["Which stocks should I buy?", "Is Bitcoin a good investment now?"]}]},
    wordPolicyConfig={"wordsConfig": [{"text": "Project Nightjar"}],
                      "managedWordListsConfig": [{"type": "PROFANITY"}]},
    sensitiveInformationPolicyConfig={
        "piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"},
                              {"type": "US_SOCIAL_SECURITY_NUMBER", "action": "BLOCK"}],
        "regexesConfig": [{"name": "EMPLOYEE_ID", "pattern": r"EMP-[0-9]{6}", "action": "ANONYMIZE"}]},
    blockedInputMessaging="That request is not allowed.",
    blockedOutputsMessaging="That answer is not allowed.",
)


@pytest.fixture(scope="module")
def made(gw):
    """A guardrail made through boto3's control-plane client, with a version 1."""
    b = client(gw, "bedrock")
    created = b.create_guardrail(name="support-guard", **DEFINITION)
    assert created["version"] == "DRAFT" and created["guardrailArn"].endswith(created["guardrailId"])
    v = b.create_guardrail_version(guardrailIdentifier=created["guardrailId"], description="first")
    assert v["version"] == "1"
    return created["guardrailId"]


def test_boto3_creates_versions_reads_lists_updates_and_deletes(gw, made):
    b = client(gw, "bedrock")
    g = b.get_guardrail(guardrailIdentifier=made, guardrailVersion="1")
    assert g["status"] == "READY" and g["version"] == "1" and g["description"] == "first"
    assert g["sensitiveInformationPolicy"]["regexes"][0]["name"] == "EMPLOYEE_ID"
    assert g["topicPolicy"]["topics"][0]["name"] == "Investment advice"
    assert g["wordPolicy"]["managedWordLists"][0]["type"] == "PROFANITY"
    # Updating the draft leaves version 1 as it was.
    b.update_guardrail(guardrailIdentifier=made, name="support-guard",
                       **{**DEFINITION, "blockedInputMessaging": "Changed."})
    assert b.get_guardrail(guardrailIdentifier=made)["blockedInputMessaging"] == "Changed."
    assert b.get_guardrail(guardrailIdentifier=made, guardrailVersion="1")["blockedInputMessaging"] == \
        "That request is not allowed."
    b.create_guardrail_version(guardrailIdentifier=made)
    versions = b.list_guardrails(guardrailIdentifier=made)["guardrails"]
    assert [v["version"] for v in versions] == ["DRAFT", "1", "2"]
    listed = b.list_guardrails()["guardrails"]
    assert {"support-guard", "pii-block", "pii-mask"} <= {g["name"] for g in listed}
    page = b.list_guardrails(maxResults=1)
    assert len(page["guardrails"]) == 1 and "nextToken" in page
    b.delete_guardrail(guardrailIdentifier=made, guardrailVersion="2")
    with pytest.raises(b.exceptions.ResourceNotFoundException):
        b.get_guardrail(guardrailIdentifier=made, guardrailVersion="2")


def test_bad_definitions_and_unknown_ids_get_aws_errors(gw):
    b = client(gw, "bedrock")
    with pytest.raises(b.exceptions.ValidationException) as e:
        b.create_guardrail(name="bad-regex", blockedInputMessaging="x", blockedOutputsMessaging="y",
                           sensitiveInformationPolicyConfig={"regexesConfig": [
                               {"name": "r", "pattern": "(unclosed", "action": "BLOCK"}]})
    assert "regexesConfig.1.member.pattern" in str(e.value)
    with pytest.raises(b.exceptions.ValidationException) as e:
        b.create_guardrail(name="bad-type", blockedInputMessaging="x", blockedOutputsMessaging="y",
                           sensitiveInformationPolicyConfig={"piiEntitiesConfig": [
                               {"type": "SHOE_SIZE", "action": "BLOCK"}]})
    assert "piiEntitiesConfig" in str(e.value)
    with pytest.raises(b.exceptions.ValidationException):
        b.create_guardrail(name="too-many-examples", blockedInputMessaging="x", blockedOutputsMessaging="y",
                           topicPolicyConfig={"topicsConfig": [{"name": "t", "definition": "d", "type": "DENY",
                                                                "examples": ["a"] * 6}]})
    with pytest.raises(b.exceptions.ConflictException):
        b.create_guardrail(name="pii-block", blockedInputMessaging="x", blockedOutputsMessaging="y")
    with pytest.raises(b.exceptions.ResourceNotFoundException):
        b.get_guardrail(guardrailIdentifier="nosuchguardrail")
    rt = client(gw, "bedrock-runtime")
    with pytest.raises(rt.exceptions.ResourceNotFoundException):
        rt.apply_guardrail(guardrailIdentifier="nosuchguardrail", guardrailVersion="1", source="INPUT",
                           content=[{"text": {"text": "hi"}}])


def apply(gw, gid, text, source="INPUT", version="1"):
    return client(gw, "bedrock-runtime").apply_guardrail(
        guardrailIdentifier=gid, guardrailVersion=version, source=source,
        content=[{"text": {"text": text}}])


def test_apply_guardrail_pii_anonymise_and_block(gw, made):
    r = apply(gw, made, f"Reach me at {EMAIL} tomorrow.")
    assert r["action"] == "GUARDRAIL_INTERVENED"
    assert r["outputs"][0]["text"] == "Reach me at {EMAIL} tomorrow."
    pii = r["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"]
    assert pii == [{"match": EMAIL, "type": "EMAIL", "action": "ANONYMIZED", "detected": True}]
    assert r["usage"]["sensitiveInformationPolicyUnits"] == 1
    r = apply(gw, made, f"My SSN is {SSN}.")
    assert r["action"] == "GUARDRAIL_INTERVENED"
    assert r["outputs"] == [{"text": "That request is not allowed."}]
    assert r["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"][0]["action"] == "BLOCKED"


def test_apply_guardrail_regex_topic_and_words(gw, made):
    r = apply(gw, made, "Please update the record of EMP-004211.")
    assert r["outputs"][0]["text"] == "Please update the record of {EMPLOYEE_ID}."
    assert r["assessments"][0]["sensitiveInformationPolicy"]["regexes"][0]["match"] == "EMP-004211"
    r = apply(gw, made, "I have some savings. Which shares should I buy this year to get rich?")
    assert r["action"] == "GUARDRAIL_INTERVENED"
    topics = r["assessments"][0]["topicPolicy"]["topics"]
    assert topics[0]["name"] == "Investment advice" and topics[0]["action"] == "BLOCKED"
    r = apply(gw, made, "What's the status of project nightjar?")
    assert r["assessments"][0]["wordPolicy"]["customWords"][0]["action"] == "BLOCKED"
    r = apply(gw, made, "This is bullshit.", source="OUTPUT")
    assert r["assessments"][0]["wordPolicy"]["managedWordLists"][0]["type"] == "PROFANITY"
    assert r["outputs"] == [{"text": "That answer is not allowed."}]
    r = apply(gw, made, "What is the capital of France?")
    assert r["action"] == "NONE" and r["outputs"] == [] and r["assessments"] == [{"invocationMetrics": r["assessments"][0]["invocationMetrics"]}]


def test_converse_input_blocked_without_calling_the_model(gw, mock):
    rt = client(gw, "bedrock-runtime")
    r = rt.converse(modelId="plain", messages=[{"role": "user", "content": [{"text": f"My SSN is {SSN}"}]}],
                    guardrailConfig={"guardrailIdentifier": "pii", "guardrailVersion": "DRAFT", "trace": "enabled"})
    assert r["stopReason"] == "guardrail_intervened"
    assert r["output"]["message"]["content"][0]["text"] == "Sorry, I cannot take personal data."
    assessment = r["trace"]["guardrail"]["inputAssessment"]["pii"]
    assert assessment["sensitiveInformationPolicy"]["piiEntities"][0]["type"] == "US_SOCIAL_SECURITY_NUMBER"
    assert mock.calls() == 0


def test_converse_masks_the_prompt_before_the_model_and_the_answer_after(gw, mock):
    mock.push({"blocks": [{"text": f"Noted: write to {EMAIL}."}]})
    rt = client(gw, "bedrock-runtime")
    r = rt.converse(modelId="plain",
                    messages=[{"role": "user", "content": [{"text": f"My card is {CARD}, mail {EMAIL}"}]}],
                    guardrailConfig={"guardrailIdentifier": "mask", "guardrailVersion": "1", "trace": "enabled"})
    sent = json.dumps(mock.requests()[-1]["body"])
    assert CARD not in sent and EMAIL not in sent and "{CREDIT_DEBIT_CARD_NUMBER}" in sent
    assert r["output"]["message"]["content"][0]["text"] == "Noted: write to {EMAIL}."
    assert r["stopReason"] == "guardrail_intervened"
    assert "mask" in r["trace"]["guardrail"]["outputAssessments"]


def test_guard_content_limits_what_is_guarded(gw, mock):
    mock.push({"blocks": [{"text": "ok"}]})
    rt = client(gw, "bedrock-runtime")
    r = rt.converse(modelId="plain", messages=[{"role": "user", "content": [
        {"text": f"Context (not guarded): {SSN}"},
        {"guardContent": {"text": {"text": "Is this fine?"}}}]}],
        guardrailConfig={"guardrailIdentifier": "pii", "guardrailVersion": "DRAFT"})
    assert r["stopReason"] != "guardrail_intervened"
    assert mock.calls() == 1


def leaky_reply():
    return {"blocks": [{"text": LEAKY}], "pieces": 3, "usage": [12, 80]}


def assert_no_fragment(raw: bytes, value: str):
    """No 4-digit piece of `value` anywhere in the bytes delivered — after taking out the
    random ids and timestamps an SSE chunk carries, which could hold any digits."""
    raw = re.sub(rb'"(id|created|system_fingerprint)":\s*("[^"]*"|[0-9]+)', b"", raw)
    digits = value.replace("-", "").replace(" ", "")
    for i in range(len(digits) - 3):
        assert digits[i:i + 4].encode() not in raw.replace(b"-", b""), f"a piece of {value} was delivered"


def raw_converse_stream(gw, body):
    r = requests.post(gw.url + "/model/plain/converse-stream", json=body, timeout=60, stream=True)
    assert r.status_code == 200, r.text
    return b"".join(r.iter_content(None))


def test_converse_stream_sync_blocks_without_a_byte_of_either_value(gw, mock):
    mock.push(leaky_reply())
    body = {"messages": [{"role": "user", "content": [{"text": "Tell me about the customer."}]}],
            "guardrailConfig": {"guardrailIdentifier": "pii", "guardrailVersion": "DRAFT",
                                "streamProcessingMode": "sync"}}
    raw = raw_converse_stream(gw, body)
    assert_no_fragment(raw, SSN)
    assert_no_fragment(raw, CARD)
    assert b"Sorry, the answer contained personal data." in raw
    # boto3 parses the same stream and sees the intervention.
    mock.push(leaky_reply())
    rt = client(gw, "bedrock-runtime")
    events = list(rt.converse_stream(modelId="plain", messages=body["messages"],
                                     guardrailConfig={**body["guardrailConfig"], "trace": "enabled"})["stream"])
    text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e)
    assert SSN not in text and CARD not in text
    assert text.startswith(FILLER[:40])
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]
    meta = [e["metadata"] for e in events if "metadata" in e][0]
    assert "pii" in meta["trace"]["guardrail"]["outputAssessments"]


def test_converse_stream_sync_masks_mid_stream(gw, mock):
    mock.push(leaky_reply())
    body = {"messages": [{"role": "user", "content": [{"text": "Tell me about the customer."}]}],
            "guardrailConfig": {"guardrailIdentifier": "mask", "guardrailVersion": "DRAFT"}}
    raw = raw_converse_stream(gw, body)
    assert_no_fragment(raw, SSN)
    assert_no_fragment(raw, CARD)
    mock.push(leaky_reply())
    events = list(client(gw, "bedrock-runtime").converse_stream(
        modelId="plain", messages=body["messages"], guardrailConfig=body["guardrailConfig"])["stream"])
    text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e)
    assert text == LEAKY.replace(SSN, "{US_SOCIAL_SECURITY_NUMBER}").replace(CARD, "{CREDIT_DEBIT_CARD_NUMBER}") \
        .replace(EMAIL, "{EMAIL}")


def test_converse_stream_async_stops_at_the_violation_and_refuses_masking(gw, mock):
    mock.push(leaky_reply())
    rt = client(gw, "bedrock-runtime")
    events = list(rt.converse_stream(
        modelId="plain", messages=[{"role": "user", "content": [{"text": "hi"}]}],
        guardrailConfig={"guardrailIdentifier": "pii", "guardrailVersion": "DRAFT",
                         "streamProcessingMode": "async"})["stream"])
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]
    with pytest.raises(rt.exceptions.ValidationException):
        rt.converse_stream(modelId="plain", messages=[{"role": "user", "content": [{"text": "hi"}]}],
                           guardrailConfig={"guardrailIdentifier": "mask", "guardrailVersion": "DRAFT",
                                            "streamProcessingMode": "async"})


def test_openai_stream_with_an_attached_guardrail(gw, mock):
    mock.push(leaky_reply())
    r = requests.post(gw.url + "/v1/chat/completions", timeout=60, stream=True, json={
        "model": "chat", "stream": True, "messages": [{"role": "user", "content": "Tell me"}]})
    raw = b"".join(r.iter_content(None))
    assert_no_fragment(raw, SSN)
    assert_no_fragment(raw, CARD)
    mock.push(leaky_reply())
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    chunks = list(oai.chat.completions.create(model="chat", stream=True,
                                              messages=[{"role": "user", "content": "Tell me"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert SSN not in text and CARD not in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["content_filter"]


def test_openai_blocked_input_is_a_400_and_masking_by_header(gw, mock):
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"SSN {SSN}"}])
    assert e.value.code == "content_filter" and "personal data" in str(e.value)
    assert mock.calls() == 0
    mock.push({"blocks": [{"text": f"Sure, {EMAIL} noted."}]})
    r = oai.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}],
                                    extra_headers={"x-modelgate-guardrail": "mask"})
    assert r.choices[0].message.content == "Sure, {EMAIL} noted."
    assert r.choices[0].finish_reason == "content_filter"


def test_invoke_model_with_guardrail_headers(gw, mock):
    rt = client(gw, "bedrock-runtime")
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "messages": [{"role": "user", "content": f"My SSN is {SSN}"}]}
    r = rt.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(body),
                        guardrailIdentifier="pii", guardrailVersion="DRAFT", trace="ENABLED")
    out = json.loads(r["body"].read())
    assert out["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert out["content"][0]["text"] == "Sorry, I cannot take personal data."
    assert "pii" in out["amazon-bedrock-trace"]["guardrail"]["inputAssessment"]
    assert mock.calls() == 0


def test_guardrail_metrics(gw):
    text = requests.get(gw.url + "/metrics", timeout=10).text
    assert 'modelgate_guardrail_actions_total{' in text
    assert 'action="blocked"' in text


def test_a_remote_guardrail_is_asked_through_apply_guardrail(gw, mock, tmp_path):
    """A guardrail that lives elsewhere (here: the first gateway, standing in for AWS) is
    declared as remote on a second gateway, which asks it through a signed ApplyGuardrail
    for ApplyGuardrail, Converse and the OpenAI door alike."""
    front = Server(config_text=f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 1

{mock_providers(mock)}
[[providers]]
name = "aws-guardrails"
type = "bedrock"
region = "us-east-1"
base_url = "{gw.url}"

[[models]]
id = "plain"
provider = "mock-openai"
upstream_id = "up-plain"

[[guardrails.define]]
id = "awspii"
remote = {{ provider = "aws-guardrails", identifier = "pii", version = "DRAFT" }}

[[guardrails.define]]
id = "awsmask"
remote = {{ provider = "aws-guardrails", identifier = "mask", version = "DRAFT" }}

[[guardrails.attach]]
guardrail = "awspii"
routes = ["/v1/chat/completions"]
""", tmp_path=str(tmp_path), env=UPSTREAM_ENV)
    try:
        rt = client(front, "bedrock-runtime")
        r = rt.apply_guardrail(guardrailIdentifier="awspii", guardrailVersion="DRAFT", source="INPUT",
                               content=[{"text": {"text": f"SSN {SSN}"}}])
        assert r["action"] == "GUARDRAIL_INTERVENED"
        assert r["outputs"] == [{"text": "Sorry, I cannot take personal data."}]
        assert r["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"][0]["action"] == "BLOCKED"
        r = rt.converse(modelId="plain", messages=[{"role": "user", "content": [{"text": f"SSN {SSN}"}]}],
                        guardrailConfig={"guardrailIdentifier": "awspii", "guardrailVersion": "DRAFT"})
        assert r["output"]["message"]["content"][0]["text"] == "Sorry, I cannot take personal data."
        assert mock.calls() == 0
        mock.push({"blocks": [{"text": f"Write to {EMAIL}."}]})
        r = rt.converse(modelId="plain", messages=[{"role": "user", "content": [{"text": "hi"}]}],
                        guardrailConfig={"guardrailIdentifier": "awsmask", "guardrailVersion": "DRAFT"})
        assert r["output"]["message"]["content"][0]["text"] == "Write to {EMAIL}."
        oai = openai.OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as e:
            oai.chat.completions.create(model="plain", messages=[{"role": "user", "content": f"card {CARD}"}])
        assert e.value.code == "content_filter"
    finally:
        front.stop()
