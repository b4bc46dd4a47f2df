"""boto3 InvokeModel / InvokeModelWithResponseStream with model-native bodies of every family,
the AWS model-id forms (profile ids, ARNs, aliases) and CountTokens over an InvokeModel body."""
import json

import pytest

from test_boto3 import make_client

QUESTION = "What is the capital of France?"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture
def client(server_url):
    return make_client(server_url)


# Each chat family: model id, body, and how to read the generated text from a whole response
# and from one stream chunk.
FAMILIES = {
    "anthropic-messages": (
        HAIKU,
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 48,
            "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        },
        lambda r: "".join(b["text"] for b in r["content"] if b["type"] == "text"),
        lambda c: c.get("delta", {}).get("text", "") if c["type"] == "content_block_delta" else "",
    ),
    "anthropic-text": (
        "anthropic.claude-v2:1",
        {
            "prompt": f"\n\nHuman: {QUESTION}\n\nAssistant:",
            "max_tokens_to_sample": 48,
            "temperature": 0,
        },
        lambda r: r["completion"],
        lambda c: c["completion"],
    ),
    "titan-text": (
        "amazon.titan-text-express-v1",
        {"inputText": QUESTION, "textGenerationConfig": {"maxTokenCount": 48, "temperature": 0}},
        lambda r: r["results"][0]["outputText"],
        lambda c: c["outputText"],
    ),
    "llama": (
        "meta.llama3-8b-instruct-v1:0",
        {
            "prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            f"{QUESTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            "max_gen_len": 48,
            "temperature": 0,
        },
        lambda r: r["generation"],
        lambda c: c["generation"],
    ),
    "mistral": (
        "mistral.mistral-7b-instruct-v0:2",
        {"prompt": f"<s>[INST] {QUESTION} [/INST]", "max_tokens": 48, "temperature": 0},
        lambda r: r["outputs"][0]["text"],
        lambda c: c["outputs"][0]["text"],
    ),
}


def invoke(client, model, body, **kw):
    r = client.invoke_model(
        modelId=model, body=json.dumps(body), contentType="application/json",
        accept="application/json", **kw
    )
    return r, json.loads(r["body"].read())


def stream_chunks(client, model, body):
    r = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
    assert r["contentType"] == "application/json"
    chunks = []
    for event in r["body"]:
        assert list(event) == ["chunk"], event
        chunks.append(json.loads(event["chunk"]["bytes"]))
    return chunks


@pytest.mark.parametrize("family", FAMILIES)
def test_invoke_model_each_family(client, family):
    model, body, text_of, _ = FAMILIES[family]
    r, out = invoke(client, model, body)
    assert "Paris" in text_of(out), out
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert r["contentType"] == "application/json"
    assert int(headers["x-amzn-bedrock-input-token-count"]) > 0
    assert int(headers["x-amzn-bedrock-output-token-count"]) > 0
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 0


@pytest.mark.parametrize("family", FAMILIES)
def test_invoke_stream_each_family_matches_non_streamed(client, family):
    model, body, text_of, chunk_text = FAMILIES[family]
    _, whole = invoke(client, model, body)
    chunks = stream_chunks(client, model, body)
    streamed = "".join(chunk_text(c) for c in chunks)
    assert streamed == text_of(whole)
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] > 0 and metrics["outputTokenCount"] > 0
    assert metrics["firstByteLatency"] <= metrics["invocationLatency"]


def test_anthropic_stream_event_order_and_usage(client):
    model, body, _, _ = FAMILIES["anthropic-messages"]
    chunks = stream_chunks(client, model, body)
    types = [c["type"] for c in chunks]
    assert types[0] == "message_start"
    assert types[1] == "content_block_start"
    assert set(types[2:-3]) == {"content_block_delta"}
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = chunks[0]["message"]
    assert start["role"] == "assistant" and start["model"] == HAIKU
    assert start["id"].startswith("msg_bdrk_")
    _, whole = invoke(client, model, body)
    # message_start counts the prompt with the model's tokenizer; it equals the final usage.
    assert start["usage"]["input_tokens"] == whole["usage"]["input_tokens"]
    assert chunks[-2]["usage"]["output_tokens"] == whole["usage"]["output_tokens"]
    assert chunks[-2]["delta"]["stop_reason"] == whole["stop_reason"]


def test_anthropic_messages_response_shape(client):
    model, body, _, _ = FAMILIES["anthropic-messages"]
    _, out = invoke(client, model, {**body, "system": "Answer in one short sentence."})
    assert out["type"] == "message" and out["role"] == "assistant"
    assert out["stop_reason"] in ("end_turn", "max_tokens")
    assert out["usage"]["input_tokens"] > 0 and out["usage"]["output_tokens"] > 0


def test_titan_embeddings(client):
    r, out = invoke(client, "amazon.titan-embed-text-v2:0", {"inputText": "The cat sat on the mat."})
    assert len(out["embedding"]) == 384
    assert abs(sum(x * x for x in out["embedding"]) - 1.0) < 1e-3
    assert out["inputTextTokenCount"] > 0
    assert int(r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"]) > 0
    _, typed = invoke(
        client, "amazon.titan-embed-text-v2:0",
        {"inputText": "The cat sat on the mat.", "embeddingTypes": ["float", "binary"]},
    )
    assert typed["embeddingsByType"]["float"] == typed["embedding"]
    assert set(typed["embeddingsByType"]["binary"]) <= {0, 1}


def test_cohere_embeddings(client):
    _, out = invoke(
        client, "cohere.embed-english-v3",
        {"texts": ["A dog runs.", "Stocks fell today."], "input_type": "search_document"},
    )
    assert out["response_type"] == "embeddings_floats"
    assert [len(v) for v in out["embeddings"]] == [384, 384]
    assert out["texts"] == ["A dog runs.", "Stocks fell today."]


@pytest.mark.parametrize(
    "model_id",
    [
        HAIKU,
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        "claude-haiku",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
    ],
)
def test_model_id_forms(client, model_id):
    r = client.converse(
        modelId=model_id,
        messages=[{"role": "user", "content": [{"text": QUESTION}]}],
        inferenceConfig={"maxTokens": 32, "temperature": 0},
    )
    assert "Paris" in r["output"]["message"]["content"][0]["text"]


def test_count_tokens_invoke_model_body_matches_converse(client):
    model, body, _, _ = FAMILIES["anthropic-messages"]
    via_invoke = client.count_tokens(
        modelId=model, input={"invokeModel": {"body": json.dumps(body).encode()}}
    )["inputTokens"]
    via_converse = client.count_tokens(
        modelId=model,
        input={"converse": {"messages": [{"role": "user", "content": [{"text": QUESTION}]}]}},
    )["inputTokens"]
    assert via_invoke == via_converse > 0
    _, whole = invoke(client, model, body)
    assert whole["usage"]["input_tokens"] == via_invoke


def test_invoke_errors_raise_botocore_exceptions(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        invoke(client, "anthropic.claude-nonexistent-v9:0", FAMILIES["anthropic-messages"][1])
    bad_bodies = [
        (HAIKU, {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),  # no version
        (HAIKU, {**FAMILIES["anthropic-messages"][1], "max_tokens": -1}),
        ("anthropic.claude-v2:1", {"prompt": "no turns", "max_tokens_to_sample": 5}),
        ("amazon.titan-text-express-v1", {"inputText": "hi", "bogus": 1}),
        ("meta.llama3-8b-instruct-v1:0", {"prompt": 42}),
        ("cohere.embed-english-v3", {"texts": ["a"]}),  # input_type missing
        ("amazon.titan-embed-text-v2:0", {"inputText": "a", "dimensions": 1024}),
    ]
    for model, body in bad_bodies:
        with pytest.raises(client.exceptions.ValidationException):
            invoke(client, model, body)
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=HAIKU, body=b"{not json", contentType="application/json")
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=HAIKU, body=b"<xml/>", contentType="application/xml")
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model_with_response_stream(
            modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "a"})
        )
    # The server still serves after all of that.
    _, out = invoke(client, *FAMILIES["titan-text"][:2])
    assert out["results"][0]["outputText"]
