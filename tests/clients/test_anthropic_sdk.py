"""The anthropic Python SDK pointed at Modelgate's /v1/messages with base_url, unmodified."""
import anthropic
import requests
import pytest

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# This SDK version has no `temperature` argument; the API still takes it, through extra_body.
T0 = {"temperature": 0}


@pytest.fixture
def client(server_url):
    return anthropic.Anthropic(base_url=server_url, api_key="unused", max_retries=0)


def test_messages_create(client):
    m = client.messages.create(model=MODEL, max_tokens=48, extra_body=T0, messages=QUESTION)
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert m.id.startswith("msg_")
    assert "Paris" in m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_messages_stream_matches_create(client):
    whole = client.messages.create(model=MODEL, max_tokens=48, extra_body=T0, messages=QUESTION)
    with client.messages.stream(model=MODEL, max_tokens=48, extra_body=T0,
                                messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text
    assert final.content[0].text == text
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.stop_reason == whole.stop_reason


def test_raw_stream_event_order(client):
    events = list(client.messages.create(model=MODEL, max_tokens=16, extra_body=T0,
                                         messages=QUESTION, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_system_prompt_and_multi_turn(client):
    m = client.messages.create(
        model="claude-haiku", max_tokens=32, extra_body=T0,
        system="You are a geography teacher.",
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! Ask me anything."},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
        ],
    )
    assert "Paris" in m.content[0].text


def test_max_tokens_zero_counts_without_generating(client):
    m = client.messages.create(model=MODEL, max_tokens=0, messages=QUESTION)
    assert m.content == [] and m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 0
    assert m.usage.input_tokens == client.messages.count_tokens(
        model=MODEL, messages=QUESTION).input_tokens


def test_an_unknown_messages_route_answers_in_the_anthropic_shape(server_url):
    r = requests.post(server_url + "/v1/messages/nope", json={}, timeout=10)
    assert r.status_code == 404
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


def test_count_tokens(client):
    n = client.messages.count_tokens(model=MODEL, messages=QUESTION)
    m = client.messages.create(model=MODEL, max_tokens=8, extra_body=T0, messages=QUESTION)
    assert n.input_tokens == m.usage.input_tokens > 0


def test_errors_raise_sdk_exceptions(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="claude-nope", max_tokens=8, messages=QUESTION)
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=-1, messages=QUESTION)
    assert e.value.body["type"] == "error"
    # A schema keyword the embedded model's grammar cannot enforce is refused by name.
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=8, messages=QUESTION, output_config={
            "format": {"type": "json_schema", "schema": {"type": "object", "not": {}}}})
    assert "'not'" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=8, messages=QUESTION, tools=[
            {"name": "get_weather", "description": "d",
             "input_schema": {"type": "object", "properties": {}, "minProperties": 1}}])
    assert "minProperties" in e.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=8,
                               messages=[{"role": "system", "content": "x"}])
