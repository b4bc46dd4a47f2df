"""The embedded model does what clients ask: structured output and tool calls enforced by
grammar-constrained sampling, a seed that repeats an answer, and token log-probabilities —
through the openai SDK, boto3 `converse` and the anthropic SDK, unmodified."""
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import anthropic
import boto3
import jsonschema
import openai
import pytest
import requests
from botocore.config import Config
from openai import OpenAI

from conftest import binary

CHAT = "local.smollm2-135m-instruct"
BEDROCK_ID = "anthropic.claude-3-haiku-20240307-v1:0"  # mapped onto the embedded model

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 15},
                 "minItems": 1, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address", "tags", "active"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
OPENAI_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather forecast for a city",
    "parameters": WEATHER}}]


@pytest.fixture
def client(server_url):
    return OpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0)


def person_request(client, i):
    return client.chat.completions.create(
        model=CHAT, temperature=0.8, seed=i, max_tokens=160,
        messages=[{"role": "user", "content": f"Invent user number {i} of a web shop."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )


def test_fifty_json_schema_answers_all_validate(client):
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda i: person_request(client, i), range(50)))
    texts = []
    for r in answers:
        assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
        value = json.loads(r.choices[0].message.content)
        jsonschema.validate(value, PERSON)
        texts.append(r.choices[0].message.content)
    # Fifty seeds at temperature 0.8 are not one answer repeated.
    assert len(set(texts)) > 10


def test_json_object_mode_streams_an_object(client):
    stream = client.chat.completions.create(
        model=CHAT, temperature=0, max_tokens=120, stream=True,
        messages=[{"role": "user", "content": "Return a JSON object with keys city and country for Paris."}],
        response_format={"type": "json_object"})
    pieces, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    # JSON mode bounds nothing: an object the model keeps growing is cut at max_tokens
    # (finish_reason length), as on any provider; this prompt's object ends well before.
    assert finish == "stop"
    assert isinstance(json.loads("".join(pieces)), dict)


def test_schema_keywords_the_grammar_cannot_enforce_are_refused_by_name(client):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "t", "schema": schema}})
    assert "uniqueItems" in str(e.value) and "/properties/tags" in str(e.value)


def test_converse_output_config_and_anthropic_output_config_validate(server_url):
    bedrock = boto3.client("bedrock-runtime", endpoint_url=server_url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="y",
                           config=Config(retries={"total_max_attempts": 1}))
    r = bedrock.converse(
        modelId=BEDROCK_ID,
        messages=[{"role": "user", "content": [{"text": "Invent a web shop user."}]}],
        inferenceConfig={"maxTokens": 200, "temperature": 0},
        outputConfig={"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {
            "schema": json.dumps(PERSON), "name": "person"}}}})
    jsonschema.validate(json.loads(r["output"]["message"]["content"][0]["text"]), PERSON)

    a = anthropic.Anthropic(base_url=server_url, api_key="unused", max_retries=0)
    m = a.messages.create(
        model="claude-haiku", max_tokens=200, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Invent a web shop user."}],
        output_config={"format": {"type": "json_schema", "schema": PERSON}})
    jsonschema.validate(json.loads(m.content[0].text), PERSON)


def test_a_required_tool_call_validates_through_every_sdk(server_url, client):
    question = "What will the weather be in Hanoi this week?"
    r = client.chat.completions.create(
        model=CHAT, temperature=0, max_tokens=120, tools=OPENAI_TOOLS, tool_choice="required",
        messages=[{"role": "user", "content": question}])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)

    bedrock = boto3.client("bedrock-runtime", endpoint_url=server_url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="y",
                           config=Config(retries={"total_max_attempts": 1}))
    c = bedrock.converse(
        modelId=BEDROCK_ID, messages=[{"role": "user", "content": [{"text": question}]}],
        inferenceConfig={"maxTokens": 120, "temperature": 0},
        toolConfig={"tools": [{"toolSpec": {"name": "get_weather",
                                            "description": "The weather forecast for a city",
                                            "inputSchema": {"json": WEATHER}}}],
                    "toolChoice": {"any": {}}})
    assert c["stopReason"] == "tool_use"
    use = [b["toolUse"] for b in c["output"]["message"]["content"] if "toolUse" in b][0]
    assert use["name"] == "get_weather"
    jsonschema.validate(use["input"], WEATHER)

    a = anthropic.Anthropic(base_url=server_url, api_key="unused", max_retries=0)
    m = a.messages.create(
        model="claude-haiku", max_tokens=120, extra_body={"temperature": 0},
        tools=[{"name": "get_weather", "description": "The weather forecast for a city",
                "input_schema": WEATHER}],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": question}])
    assert m.stop_reason == "tool_use"
    block = [b for b in m.content if b.type == "tool_use"][0]
    assert block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER)


def test_a_streamed_tool_call_and_the_round_trip(client):
    messages = [{"role": "user", "content": "Weather in Lisbon in celsius?"}]
    stream = client.chat.completions.create(
        model=CHAT, temperature=0, max_tokens=120, tools=OPENAI_TOOLS, tool_choice="required",
        messages=messages, stream=True)
    calls, finish = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                entry["id"] = tc.id or entry["id"]
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["args"] += tc.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and len(calls) == 1
    call = calls[0]
    arguments = json.loads(call["args"])
    jsonschema.validate(arguments, WEATHER)

    # The call and its result go back; with tool_choice auto the model may answer in text.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": call["id"], "type": "function",
            "function": {"name": "get_weather", "arguments": call["args"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 24 degrees."},
    ]
    r = client.chat.completions.create(model=CHAT, temperature=0, max_tokens=60,
                                       tools=OPENAI_TOOLS, messages=messages)
    choice = r.choices[0]
    if choice.message.tool_calls:
        jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments), WEATHER)
    else:
        assert choice.message.content and "<tool_call>" not in choice.message.content


def test_the_same_seed_gives_the_same_text(client):
    def ask(seed):
        return client.chat.completions.create(
            model=CHAT, temperature=0.9, seed=seed, max_tokens=40,
            messages=[{"role": "user", "content": "Write one sentence about the sea."}],
        ).choices[0].message.content
    first = ask(1234)
    assert ask(1234) == first
    assert any(ask(s) != first for s in (1, 2, 3))


def test_top_k_penalties_and_logit_bias_shape_sampling(client, server_url):
    """The embedded model honours OpenAI's sampling controls with llama.cpp's samplers."""
    sea = [{"role": "user", "content": "Write one sentence about the sea."}]

    def ask(**kw):
        return client.chat.completions.create(model=CHAT, messages=sea, max_tokens=24, **kw)

    greedy = ask(temperature=0).choices[0].message.content
    # top_k = 1 leaves one candidate: any seed at any temperature gives the greedy text.
    for seed in (1, 2):
        assert ask(temperature=1.5, seed=seed, extra_body={"top_k": 1}) \
            .choices[0].message.content == greedy
    # A presence penalty at full strength changes what greedy decoding repeats.
    echo = [{"role": "user", "content": "Repeat the word 'hello' ten times."}]
    plain = client.chat.completions.create(model=CHAT, messages=echo, max_tokens=30,
                                           temperature=0).choices[0].message.content
    penalised = client.chat.completions.create(
        model=CHAT, messages=echo, max_tokens=30, temperature=0, presence_penalty=2,
        frequency_penalty=2).choices[0].message.content
    assert penalised != plain
    # A +100 bias on one token id makes it the only one greedy decoding picks.
    r = ask(temperature=0, logit_bias={"1000": 100}, logprobs=True)
    tokens = [t.token for t in r.choices[0].logprobs.content]
    assert len(tokens) == 24 and len(set(tokens)) == 1, tokens
    # Token ids outside the vocabulary, or biases out of range, are refused by name.
    for bias, text in (({"99999999": 1}, "not in the vocabulary"),
                       ({"5": 101}, "between -100 and 100"),
                       ({"word": 1}, "not a token id")):
        with pytest.raises(openai.BadRequestError) as e:
            ask(logit_bias=bias)
        assert text in str(e.value) and "logit_bias" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        ask(frequency_penalty=3)
    assert "frequency_penalty must be between -2 and 2" in str(e.value)


def test_logprobs_whole_and_streamed(client):
    args = dict(model=CHAT, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3,
                messages=[{"role": "user", "content": "What is the capital of France?"}])
    r = client.chat.completions.create(**args)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        assert [a.logprob for a in t.top_logprobs] == sorted(
            (a.logprob for a in t.top_logprobs), reverse=True)
        # Greedy decoding takes the most likely token.
        assert t.token == t.top_logprobs[0].token
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob)
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    # Probabilities of the top alternatives cannot sum past one.
    assert all(sum(2.718281828 ** a.logprob for a in t.top_logprobs) <= 1.0001 for t in content)

    streamed = []
    for chunk in client.chat.completions.create(**args, stream=True):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                streamed.extend(choice.logprobs.content)
    assert [t.token for t in streamed] == [t.token for t in content]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in content])

    plain = client.chat.completions.create(**{**args, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_legacy_completions_logprobs(client):
    r = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=6,
                                  temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(len(alts) <= 2 for alts in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


def test_top_logprobs_without_logprobs_is_refused(server_url):
    # OpenAI's own rule, answered in its error shape.
    r = requests.post(server_url + "/v1/chat/completions", json={
        "model": CHAT, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})
    assert r.status_code == 400 and "top_logprobs" in r.json()["error"]["message"]


def test_the_chat_command_with_a_schema_and_tools(tmp_path):
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    out = subprocess.run(
        [binary(), "chat", "Invent a web shop user.", "--json-schema", str(schema),
         "--temperature", "0", "--max-tokens", "200"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    jsonschema.validate(json.loads(out), PERSON)

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(OPENAI_TOOLS))
    out = subprocess.run(
        [binary(), "chat", "Weather in Hanoi?", "--tools", str(tools), "--require-tool",
         "--temperature", "0", "--max-tokens", "120"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith("tool call: get_weather ")][0]
    jsonschema.validate(json.loads(line.split(" ", 3)[3]), WEATHER)

    bad = subprocess.run([binary(), "chat", "hi", "--json-schema", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "missing.json" in bad.stderr
