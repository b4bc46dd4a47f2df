"""Real clients through Modelgate to upstream providers (the test kit's mock upstream, run as
the `mock-upstream` process): every front door × the OpenAI-compatible, Anthropic and Bedrock
providers, with tool calls streamed in pieces split at awkward byte boundaries — the
translation bug class peers are known for — and failures after a stream started.
"""
import base64
import json
import os
import subprocess

import anthropic
import boto3
import botocore.exceptions
import openai
import pytest
import requests
from botocore.config import Config

from conftest import Server

OPENAI_MODEL = "gpt-up"
ANTHROPIC_MODEL = "claude-up"
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ALL_MODELS = [OPENAI_MODEL, ANTHROPIC_MODEL, BEDROCK_MODEL]
ARGS = {"city": "Paris", "unit": "°C", "note": "quotes \" and emoji 🌍"}


def mock_binary():
    if os.environ.get("MOCK_UPSTREAM_BIN"):
        return os.environ["MOCK_UPSTREAM_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target")
    return os.path.join(target, "debug", "mock-upstream")


class Mock:
    def __init__(self):
        self.proc = subprocess.Popen([mock_binary()], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.url = line.split(" ", 2)[2]

    def push(self, *replies):
        r = requests.post(self.url + "/_mock/push", json=list(replies), timeout=5)
        r.raise_for_status()

    def reset(self):
        requests.post(self.url + "/_mock/reset", json={}, timeout=5).raise_for_status()

    def requests(self):
        return requests.get(self.url + "/_mock/requests", timeout=5).json()

    def calls(self):
        return requests.get(self.url + "/_mock/calls", timeout=5).json()["calls"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def mock_providers(mock):
    """The mock upstream as three providers: `mock-openai`, `mock-anthropic`, `mock-bedrock`
    (keys from MG_TEST_UPSTREAM_KEY and the AWS_* variables of UPSTREAM_ENV)."""
    return f"""
[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[providers]]
name = "mock-anthropic"
type = "anthropic"
base_url = "{mock.url}"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[providers]]
name = "mock-bedrock"
type = "bedrock"
region = "us-east-1"
base_url = "{mock.url}"
"""


def mock_models():
    """One served model per mock provider: `gpt-up`, `claude-up` and the Bedrock id."""
    return f"""
[[models]]
id = "{OPENAI_MODEL}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[[models]]
id = "{ANTHROPIC_MODEL}"
provider = "mock-anthropic"
upstream_id = "claude-3-5-haiku-latest"

[[models]]
id = "{BEDROCK_MODEL}"
provider = "mock-bedrock"
upstream_id = "{BEDROCK_MODEL}"
"""


def translation_config(mock, local=True):
    """A gateway configuration for translation tests: every request makes exactly one upstream
    call (no retries, no breaker), to the three mock providers and their models; the embedded
    models too unless `local` is false."""
    return ("" if local else "[local]\nenabled = false\n") + f"""
[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

{mock_providers(mock)}{mock_models()}"""


UPSTREAM_ENV = {"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "AWS_ACCESS_KEY_ID": "AKIDUPSTREAM",
                "AWS_SECRET_ACCESS_KEY": "upstream-secret"}


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    # This module tests translation, so every request makes exactly one upstream call and
    # answers come only from upstreams: retries, breakers and the cached fallback level are
    # off (test_resilience.py covers them).
    config = translation_config(mock, local=False) + f"""
[[models]]
id = "anthropic.claude-3-opus-20240229-v1:0"
provider = "mock-openai"
upstream_id = "gpt-4o"

[[models]]
id = "meta.llama3-70b-instruct-v1:0"
provider = "mock-anthropic"
upstream_id = "claude-3-5-haiku-latest"

[[models]]
id = "embed-up"
provider = "mock-openai"
upstream_id = "text-embedding-3-small"
kind = "embedding"
"""
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("up")),
                    env=UPSTREAM_ENV)
    yield server
    server.stop()
    logs = server.logs()
    assert "sk-upstream-test" not in logs and "upstream-secret" not in logs


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def tool_reply(split=5):
    return {"blocks": [{"text": "Checking."},
                       {"tool_call": {"id": "call_1", "name": "get_weather", "arguments": ARGS}}],
            "split": split, "pieces": 1, "usage": [20, 8]}


def bedrock(url):
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="y",
                        config=Config(retries={"total_max_attempts": 1}))


TOOL_CONFIG = {"tools": [{"toolSpec": {
    "name": "get_weather", "description": "Weather in a city",
    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}]}
OPENAI_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather in a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.mark.parametrize("model", ALL_MODELS)
def test_boto3_converse_stream_tool_round_trip(gateway, mock, model):
    client = bedrock(gateway.url)
    mock.push(tool_reply())
    messages = [{"role": "user", "content": [{"text": "Weather in Paris?"}]}]
    response = client.converse_stream(modelId=model, messages=messages, toolConfig=TOOL_CONFIG)
    kinds, text, tool, fragments, stop, usage = [], "", None, [], None, None
    for event in response["stream"]:
        kind = next(iter(event))
        kinds.append(kind)
        if kind == "contentBlockStart":
            tool = event[kind]["start"]["toolUse"]
        elif kind == "contentBlockDelta":
            delta = event[kind]["delta"]
            if "text" in delta:
                text += delta["text"]
            else:
                fragments.append(delta["toolUse"]["input"])
        elif kind == "messageStop":
            stop = event[kind]["stopReason"]
        elif kind == "metadata":
            usage = event[kind]["usage"]
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata"
    assert text == "Checking."
    assert tool == {"toolUseId": "call_1", "name": "get_weather"}
    assert len(fragments) > 1, "arguments arrive in pieces"
    assert json.loads("".join(fragments)) == ARGS
    assert stop == "tool_use"
    assert (usage["inputTokens"], usage["outputTokens"]) == (20, 8)

    # Second turn: the tool result goes back through the same translation.
    mock.push({"blocks": [{"text": "It is 21 °C in Paris."}]})
    messages += [
        {"role": "assistant", "content": [{"text": "Checking."}, {"toolUse": {
            "toolUseId": "call_1", "name": "get_weather", "input": ARGS}}]},
        {"role": "user", "content": [{"toolResult": {
            "toolUseId": "call_1", "content": [{"json": {"temp": 21}}]}}]},
    ]
    answer = client.converse(modelId=model, messages=messages, toolConfig=TOOL_CONFIG)
    assert answer["output"]["message"]["content"][0]["text"] == "It is 21 °C in Paris."
    sent = json.dumps(mock.requests()[-1]["body"])
    assert "call_1" in sent and "temp" in sent and "21" in sent


@pytest.mark.parametrize("model", ALL_MODELS)
def test_boto3_stream_failing_midway_raises_exception_frame(gateway, mock, model):
    client = bedrock(gateway.url)
    # Cut after some text went out: a failure before the first output is an ordinary error
    # response instead (test_resilience.py), since nothing reached the client yet.
    mock.push({"blocks": [{"text": "This answer is cut off before it ends."}], "pieces": 8,
               "cut_after": 6})
    response = client.converse_stream(
        modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    seen = []
    with pytest.raises(botocore.exceptions.EventStreamError) as e:
        for event in response["stream"]:
            seen.append(next(iter(event)))
    assert e.value.response["Error"]["Code"] == "serviceUnavailableException"
    assert seen and "messageStop" not in seen


@pytest.mark.parametrize("model", ALL_MODELS)
def test_openai_sdk_streams_tool_calls_from_every_upstream(gateway, mock, model):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    mock.push(tool_reply(split=3))
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=OPENAI_TOOLS, stream=True, stream_options={"include_usage": True})
    text, calls, finish, usage = "", {}, None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "args": ""})
                entry["id"] = call.id or entry["id"]
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                entry["args"] += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert text == "Checking."
    assert list(calls) == [0]
    assert calls[0]["id"] == "call_1" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["args"]) == ARGS
    assert finish == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens) == (20, 8)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_anthropic_sdk_streams_tool_use_from_every_upstream(gateway, mock, model):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    mock.push(tool_reply(split=7))
    with client.messages.stream(model=model, max_tokens=64, tools=ANTHROPIC_TOOLS,
                                messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
        partial = [e.partial_json for e in s if e.type == "input_json"]
        final = s.get_final_message()
    assert len(partial) > 1
    assert final.content[0].text == "Checking."
    assert final.content[1].type == "tool_use"
    assert final.content[1].input == ARGS and final.content[1].id == "call_1"
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 8)


def test_upstream_errors_reach_each_client_in_its_dialect(gateway, mock):
    mock.push({"status": 429, "message": "slow down", "retry_after": "3"})
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hi"}])
    mock.push({"status": 503, "message": "down"})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bedrock(gateway.url).converse(
            modelId=OPENAI_MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert e.value.response["Error"]["Code"] == "ServiceUnavailableException"
    mock.push({"status": 400, "message": "prompt is too long"})
    with pytest.raises(anthropic.BadRequestError) as e:
        anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0).messages.create(
            model=BEDROCK_MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert "prompt is too long" in e.value.message
    assert mock.calls() == 3, "retries are off here: one upstream call per request"


def test_json_schema_output_and_embeddings_pass_through(gateway, mock):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    mock.push({"blocks": [{"text": "{\"city\": \"Paris\"}"}]})
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "city?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    assert json.loads(r.choices[0].message.content) == {"city": "Paris"}
    sent = mock.requests()[-1]
    assert sent["body"]["response_format"]["json_schema"]["schema"] == schema
    assert sent["body"]["model"] == "gpt-4o-mini", "the upstream id replaces the client's name"
    e = client.embeddings.create(model="embed-up", input=["one two", "three"])
    assert [d.index for d in e.data] == [0, 1] and len(e.data[0].embedding) == 8
    assert e.usage.prompt_tokens == 3


def test_invoke_model_native_bodies_served_by_upstreams(gateway, mock):
    client = bedrock(gateway.url)
    # Anthropic Messages body, streamed, served by an OpenAI-compatible upstream's tool calls.
    mock.push(tool_reply(split=4))
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "tools": ANTHROPIC_TOOLS,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    r = client.invoke_model_with_response_stream(
        modelId="anthropic.claude-3-opus-20240229-v1:0", body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    starts = [c["content_block"] for c in chunks if c["type"] == "content_block_start"]
    assert {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}} in starts
    fragments = [c["delta"]["partial_json"] for c in chunks
                 if c["type"] == "content_block_delta" and c["delta"]["type"] == "input_json_delta"]
    assert len(fragments) > 1 and json.loads("".join(fragments)) == ARGS
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (20, 8)
    sent = mock.requests()[-1]["body"]
    assert sent["model"] == "gpt-4o" and sent["tools"][0]["function"]["name"] == "get_weather"

    # Llama body served by an Anthropic upstream: the raw prompt is parsed back into turns.
    mock.push({"blocks": [{"text": "Paris."}], "usage": [31, 2]})
    prompt = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nCapital of France?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    r = client.invoke_model(modelId="meta.llama3-70b-instruct-v1:0",
                            body=json.dumps({"prompt": prompt, "max_gen_len": 16}))
    out = json.loads(r["body"].read())
    assert out["generation"] == "Paris."
    assert (out["prompt_token_count"], out["generation_token_count"]) == (31, 2)
    sent = mock.requests()[-1]["body"]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]


@pytest.mark.parametrize("model", ALL_MODELS)
def test_images_reach_every_upstream(gateway, mock, model):
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")
    mock.push({"blocks": [{"text": "A pixel."}]})
    r = bedrock(gateway.url).converse(modelId=model, messages=[{"role": "user", "content": [
        {"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": png}}}]}])
    assert r["output"]["message"]["content"][0]["text"] == "A pixel."
    import base64
    encoded = base64.b64encode(png).decode()
    assert encoded in json.dumps(mock.requests()[-1]["body"])


@pytest.mark.parametrize("model", ALL_MODELS)
def test_an_assistant_first_conversation_reaches_every_upstream(gateway, mock, model):
    """The OpenAI API accepts a conversation that starts with the assistant; Anthropic and
    Bedrock upstreams need a user turn first, so they get a one-character one."""
    mock.push({"blocks": [{"text": "Paris."}]})
    r = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "assistant", "content": "Ask me about capitals."},
                               {"role": "user", "content": "France?"}])
    assert r.choices[0].message.content == "Paris."
    sent = mock.requests()[-1]["body"]["messages"]
    roles = [m["role"] for m in sent if m["role"] != "system"]
    if model == OPENAI_MODEL:
        assert roles == ["assistant", "user"]
    else:
        assert roles == ["user", "assistant", "user"]
        first = sent[0]["content"]
        assert "." == (first[0]["text"] if isinstance(first, list) else first)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_rejected_upstream_credentials_never_leak(gateway, mock, model):
    requests.post(mock.url + "/_mock/require_key", json={"key": "some-other-key"},
                  timeout=5).raise_for_status()
    with pytest.raises(openai.PermissionDeniedError) as e:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}])
    text = json.dumps(e.value.body)
    assert "credentials" in text
    for secret in ("sk-upstream-test", "upstream-secret"):
        assert secret not in text and secret not in gateway.logs()


def test_converse_cache_points_become_anthropic_cache_control(gateway, mock):
    mock.push({"blocks": [{"text": "ok"}]})
    bedrock(gateway.url).converse(
        modelId=ANTHROPIC_MODEL,
        system=[{"text": "Long instructions."}, {"cachePoint": {"type": "default"}}],
        messages=[{"role": "user", "content": [
            {"text": "A long document."}, {"cachePoint": {"type": "default"}}, {"text": "Question?"}]}])
    sent = mock.requests()[-1]["body"]
    assert sent["system"] == [{"type": "text", "text": "Long instructions.",
                               "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "A long document.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Question?"}]


SIGNATURE = "EqQBCkYIBxgCKkD+sig/=="
REDACTED = "ZW5jcnlwdGVkIHJlYXNvbmluZw=="
THINKING_REPLY = {"blocks": [{"thinking": "Six times seven… is 42.", "signature": SIGNATURE},
                             {"redacted_thinking": REDACTED}, {"text": "42"}],
                  "split": 3, "pieces": 2, "usage": [11, 30]}
SIGNED_UPSTREAMS = [ANTHROPIC_MODEL, BEDROCK_MODEL]


def sent_budget(body):
    """The reasoning budget in the body an upstream received, whatever its dialect."""
    thinking = body.get("thinking") or body.get("additionalModelRequestFields", {}).get("thinking")
    return thinking["budget_tokens"] if thinking else body.get("reasoning_effort")


def sent_signature(body):
    """The signature on the reasoning block of the assistant turn an upstream received."""
    for block in body["messages"][1]["content"]:
        if block.get("type") == "thinking":
            return block["signature"]
        if "reasoningContent" in block:
            return block["reasoningContent"]["reasoningText"]["signature"]
    return None


@pytest.mark.parametrize("model", SIGNED_UPSTREAMS)
def test_anthropic_sdk_extended_thinking_streams_signatures_and_goes_back(gateway, mock, model):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    mock.push(THINKING_REPLY)
    question = {"role": "user", "content": "6 × 7?"}
    with client.messages.stream(model=model, max_tokens=4096, messages=[question],
                                thinking={"type": "enabled", "budget_tokens": 2048}) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    assert sent_budget(mock.requests()[-1]["body"]) == 2048
    thinking, redacted, text = final.content
    assert (thinking.type, thinking.thinking, thinking.signature) == (
        "thinking", "Six times seven… is 42.", SIGNATURE)
    assert (redacted.type, redacted.data) == ("redacted_thinking", REDACTED)
    assert text.text == "42"

    # The next turn sends the signed reasoning back; the upstream gets it unchanged.
    mock.push({"blocks": [{"text": "Yes."}]})
    client.messages.create(
        model=model, max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[question, {"role": "assistant", "content": final.content},
                  {"role": "user", "content": "Sure?"}])
    assert sent_signature(mock.requests()[-1]["body"]) == SIGNATURE


@pytest.mark.parametrize("model", SIGNED_UPSTREAMS)
def test_boto3_converse_stream_reasoning_with_signature(gateway, mock, model):
    mock.push(THINKING_REPLY)
    response = bedrock(gateway.url).converse_stream(
        modelId=model, messages=[{"role": "user", "content": [{"text": "6 × 7?"}]}],
        inferenceConfig={"maxTokens": 4096},
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 3000}})
    reasoning, signature, redacted, text = "", None, None, ""
    for event in response["stream"]:
        delta = event.get("contentBlockDelta", {}).get("delta", {})
        r = delta.get("reasoningContent", {})
        reasoning += r.get("text", "")
        signature = r.get("signature", signature)
        redacted = r.get("redactedContent", redacted)
        text += delta.get("text", "")
    assert sent_budget(mock.requests()[-1]["body"]) == 3000
    assert (reasoning, signature, text) == ("Six times seven… is 42.", SIGNATURE, "42")
    assert redacted == base64.b64decode(REDACTED), "a blob, which boto3 decodes"


def test_openai_reasoning_effort_becomes_a_budget_and_bad_values_are_refused(gateway, mock):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    mock.push({"blocks": [{"text": "ok"}]})
    client.chat.completions.create(model=ANTHROPIC_MODEL, reasoning_effort="high",
                                   messages=[{"role": "user", "content": "hi"}])
    body = mock.requests()[-1]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] > 4096, "room for the answer beyond the thinking budget"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=ANTHROPIC_MODEL, reasoning_effort="extreme",
                                       messages=[{"role": "user", "content": "hi"}])
    assert "reasoning_effort" in str(e.value)
    assert mock.calls() == 1, "a refused request never reaches the upstream"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_seed_and_logprobs_fates_per_upstream(gateway, mock, model):
    """An OpenAI-compatible upstream takes `seed`, `logprobs` and `top_logprobs` as sent;
    Anthropic and Bedrock have neither: the seed is dropped and the answer names it in
    `x-modelgate-dropped-params`, log-probabilities are refused before any upstream call."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    question = [{"role": "user", "content": "hi"}]
    mock.push({"blocks": [{"text": "Hello."}]})
    raw = client.chat.completions.with_raw_response.create(model=model, messages=question, seed=7)
    assert raw.parse().choices[0].message.content == "Hello."
    sent = mock.requests()[-1]["body"]
    if model == OPENAI_MODEL:
        assert sent["seed"] == 7
        assert "x-modelgate-dropped-params" not in raw.headers
    else:
        assert "seed" not in json.dumps(sent)
        assert raw.headers["x-modelgate-dropped-params"] == "seed"
    calls = mock.calls()
    if model == OPENAI_MODEL:
        mock.push({"blocks": [{"text": "Hello."}]})
        client.chat.completions.create(model=model, messages=question, logprobs=True,
                                       top_logprobs=2)
        sent = mock.requests()[-1]["body"]
        assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    else:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=model, messages=question, logprobs=True)
        assert "log-probabilities" in str(e.value)
        assert mock.calls() == calls, "refused before any upstream call"
