"""SigV4: with [[auth.sigv4]] configured, boto3 signed with the issued secret is served; a wrong
secret, an unknown key or an unsigned call is refused with AWS's exceptions and not served."""
import boto3
import botocore
import pytest
import requests
from botocore.config import Config

SECRET = "mg-test-secret/with+odd=chars"
CONFIG = """
[[auth.sigv4]]
access_key_id = "AKIDMODELGATE"
secret_access_key_env = "MODELGATE_TEST_SIGV4_SECRET"

[[models]]
id = "anthropic.claude-3-haiku-20240307-v1:0"
upstream_id = "local.smollm2-135m-instruct"
"""
MODEL_ARN = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]


def client(url, key="AKIDMODELGATE", secret=SECRET, signed=True):
    cfg = Config(retries={"max_attempts": 1, "mode": "standard"})
    if not signed:
        cfg = cfg.merge(Config(signature_version=botocore.UNSIGNED))
    return boto3.client(
        "bedrock-runtime", endpoint_url=url, region_name="eu-west-1",
        aws_access_key_id=key, aws_secret_access_key=secret, config=cfg,
    )


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory):
    from conftest import Server

    s = Server(config_text=CONFIG, tmp_path=str(tmp_path_factory.mktemp("sigv4")),
               env={"MODELGATE_TEST_SIGV4_SECRET": SECRET})
    yield s
    s.stop()


def test_signed_calls_are_served(signed_server):
    c = client(signed_server.url)
    # An ARN model id exercises the double-encoded canonical URI (%3A and %2F in the path).
    r = c.converse(modelId=MODEL_ARN, messages=MESSAGES,
                   inferenceConfig={"maxTokens": 32, "temperature": 0})
    assert "Paris" in r["output"]["message"]["content"][0]["text"]
    s = c.converse_stream(modelId=MODEL_ARN, messages=MESSAGES,
                          inferenceConfig={"maxTokens": 32, "temperature": 0})
    text = "".join(e["contentBlockDelta"]["delta"]["text"]
                   for e in s["stream"] if "contentBlockDelta" in e)
    assert "Paris" in text


def error_code(call):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_bad_credentials_are_refused(signed_server):
    converse = lambda c: c.converse(modelId=MODEL_ARN, messages=MESSAGES,  # noqa: E731
                                    inferenceConfig={"maxTokens": 8})
    assert error_code(lambda: converse(client(signed_server.url, secret="wrong"))) == (
        "InvalidSignatureException", 403)
    assert error_code(lambda: converse(client(signed_server.url, key="AKIDUNKNOWN"))) == (
        "UnrecognizedClientException", 403)
    assert error_code(lambda: converse(client(signed_server.url, signed=False))) == (
        "MissingAuthenticationTokenException", 403)
    # A replayed request with a tampered body fails too.
    r = requests.post(f"{signed_server.url}/model/x/converse", data=b"{}",
                      headers={"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDMODELGATE/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
                               "X-Amz-Date": "20260101T000000Z"})
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert "expired" in r.json()["message"]
    # None of the refused calls reached the model, and no secret reached the log.
    logs = signed_server.logs()
    assert SECRET not in logs
    # Three signed calls had bad signatures; the unsigned one is refused before any signature.
    assert logs.count("bad SigV4 signature") == 3
    assert 'error_code="MissingAuthenticationTokenException"' in logs


def test_other_front_doors_need_credentials_once_any_are_configured(signed_server):
    # Static SigV4 keys are credentials: the gateway is no longer open, on any door.
    r = requests.get(f"{signed_server.url}/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"


def test_eventbridge_calls_are_signed_for_the_events_service(signed_server):
    import json

    def events(secret=SECRET):
        return boto3.client("events", endpoint_url=signed_server.url, region_name="eu-west-1",
                            aws_access_key_id="AKIDMODELGATE", aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 1}))
    c = events()
    arn = c.put_rule(Name="signed", EventPattern=json.dumps({"source": ["a"]}))["RuleArn"]
    assert arn.endswith(":rule/signed")
    assert c.describe_rule(Name="signed")["State"] == "ENABLED"
    # The AWS JSON protocol services answer signature errors with 400 (REST services: 403).
    assert error_code(lambda: events(secret="wrong").list_rules()) == ("InvalidSignatureException", 400)
