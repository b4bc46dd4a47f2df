"""boto3's bedrock-runtime client pointed at Modelgate with endpoint_url, unmodified."""
import boto3
import pytest
from botocore.config import Config

CHAT = "local.smollm2-135m-instruct"


def make_client(url, validate=True):
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"},
                      parameter_validation=validate),
    )


@pytest.fixture
def client(server_url):
    return make_client(server_url)


def test_converse_answers(client):
    r = client.converse(
        modelId=CHAT,
        messages=[{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        inferenceConfig={"maxTokens": 64, "temperature": 0},
    )
    text = r["output"]["message"]["content"][0]["text"]
    assert "Paris" in text
    assert r["output"]["message"]["role"] == "assistant"
    assert r["stopReason"] in ("end_turn", "max_tokens")
    u = r["usage"]
    assert u["inputTokens"] > 0 and u["outputTokens"] > 0
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert isinstance(r["metrics"]["latencyMs"], int)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert r["ResponseMetadata"]["RequestId"]


def test_converse_with_system_and_stop_sequence(client):
    r = client.converse(
        modelId=CHAT,
        system=[{"text": "You are a helpful assistant."}],
        messages=[{"role": "user", "content": [{"text": "Count from 1 to 20, separated by commas."}]}],
        inferenceConfig={"maxTokens": 100, "temperature": 0, "stopSequences": ["5"]},
    )
    text = r["output"]["message"]["content"][0]["text"]
    assert "5" not in text
    assert r["stopReason"] in ("stop_sequence", "end_turn", "max_tokens")


def test_unknown_model_raises_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.converse(
            modelId="anthropic.claude-not-configured-v9:0",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
        )


def test_server_side_validation_raises_validation_exception(server_url):
    # Turn off botocore's own checks so the server's are exercised.
    client = make_client(server_url, validate=False)
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId=CHAT, messages=[])
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(
            modelId=CHAT,
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
            inferenceConfig={"maxTokens": 0},
        )
    r = client.converse(modelId=CHAT, messages=[{"role": "user", "content": [{"text": "hi"}]}],
                        inferenceConfig={"maxTokens": 4})
    assert r["usage"]["outputTokens"] <= 4


def test_converse_stream_event_order_and_text(client):
    kwargs = dict(
        modelId=CHAT,
        messages=[{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        inferenceConfig={"maxTokens": 64, "temperature": 0},
    )
    whole = client.converse(**kwargs)
    r = client.converse_stream(**kwargs)
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    names, text, stop, meta = [], [], None, None
    for event in r["stream"]:
        (name, body), = event.items()
        names.append(name)
        if name == "contentBlockDelta":
            assert body["contentBlockIndex"] == 0
            text.append(body["delta"]["text"])
        elif name == "messageStop":
            stop = body["stopReason"]
        elif name == "metadata":
            meta = body
    # messageStart, deltas, contentBlockStop, messageStop, metadata — in that order.
    assert names[0] == "messageStart"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(names[1:-3]) == {"contentBlockDelta"} and len(names) > 5
    assert "".join(text) == whole["output"]["message"]["content"][0]["text"]
    assert stop == whole["stopReason"]
    assert meta["usage"] == whole["usage"]
    assert isinstance(meta["metrics"]["latencyMs"], int)


def test_converse_stream_errors_before_the_stream_raise(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.converse_stream(
            modelId="anthropic.claude-not-configured-v9:0",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
        )


def test_count_tokens_matches_converse_usage(client):
    messages = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]
    counted = client.count_tokens(modelId=CHAT, input={"converse": {"messages": messages}})
    used = client.converse(modelId=CHAT, messages=messages, inferenceConfig={"maxTokens": 4})
    assert counted["inputTokens"] == used["usage"]["inputTokens"] > 0
    longer = client.count_tokens(modelId=CHAT, input={"converse": {
        "system": [{"text": "You are terse."}], "messages": messages}})
    assert longer["inputTokens"] > counted["inputTokens"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.count_tokens(modelId="no.such-model", input={"converse": {"messages": messages}})


def test_operations_not_served_yet_raise_unknown_operation(client):
    """InvokeGuardrailChecks is a Bedrock Runtime operation this gateway does not serve yet:
    boto3 gets AWS's named error, not a bare 404. (ApplyGuardrail is served: an unknown
    guardrail is AWS's ResourceNotFoundException; so are the asynchronous invocations: an
    unknown invocation is a ValidationException, as in AWS.)"""
    from botocore.exceptions import ClientError
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.apply_guardrail(guardrailIdentifier="g1", guardrailVersion="1",
                               source="INPUT", content=[{"text": {"text": "hi"}}])
    with pytest.raises(client.exceptions.ValidationException):
        client.get_async_invoke(
            invocationArn="arn:aws:bedrock:us-east-1:000000000000:async-invoke/abcdefghijkl")
    calls = [
        lambda: client.invoke_guardrail_checks(
            messages=[{"role": "user", "content": [{"text": "hi"}]}], checks={}),
    ]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "UnknownOperationException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
