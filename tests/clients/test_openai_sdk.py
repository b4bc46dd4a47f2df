"""The official openai Python SDK against Modelgate, unmodified."""
import math

import openai
import pytest
from openai import OpenAI

CHAT = "local.smollm2-135m-instruct"
EMBED = "local.all-minilm-l6-v2"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(server_url):
    return OpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_answers_paris(client):
    r = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0)
    text = r.choices[0].message.content
    assert "Paris" in text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == CHAT


def test_stream_concatenation_equals_non_streamed_text(client):
    full = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0)
    stream = client.chat.completions.create(
        model=CHAT, messages=QUESTION, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert len(pieces) > 2
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_embeddings_are_unit_vectors_that_rank_paraphrases_higher(client):
    # The SDK asks for base64 by default and decodes it; test both encodings.
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?",
             "The weather in Lisbon is sunny today."]
    r = client.embeddings.create(model=EMBED, input=texts)
    vecs = [d.embedding for d in r.data]
    floats = client.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    for got, want in zip((d.embedding for d in floats.data), vecs):
        assert got == pytest.approx(want, abs=1e-6)
    assert [len(v) for v in vecs] == [384, 384, 384]
    for v in vecs:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-3)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]) + 0.2
    assert r.usage.prompt_tokens > 0


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert {CHAT, EMBED} <= ids


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nonexistent", messages=QUESTION)
    assert e.value.status_code == 404
    assert "gpt-nonexistent" in e.value.message


def test_bad_requests_are_400(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=CHAT, messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=CHAT, messages=QUESTION, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=CHAT, messages=QUESTION, n=3)
    # The server keeps serving afterwards.
    r = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=8)
    assert r.choices[0].message.content


def test_a_wrongly_typed_field_is_named_in_every_dialect(client, server_url):
    import anthropic
    import requests

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=QUESTION, temperature="hot")
    assert "temperature: invalid type: string \"hot\"" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": 5}])
    assert "messages[1]" in e.value.message
    claude = anthropic.Anthropic(base_url=server_url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=CHAT, max_tokens=16, messages=QUESTION,
                               extra_body={"temperature": "hot"})
    assert "temperature: invalid type" in str(e.value)
    # Bedrock Converse (raw HTTP: boto3 checks types before sending).
    r = requests.post(f"{server_url}/model/{CHAT}/converse", timeout=30, json={
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"temperature": "hot"}})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert "inferenceConfig.temperature: invalid type" in r.json()["message"]


def test_a_conversation_may_start_with_the_assistant(client, server_url):
    import requests

    messages = [{"role": "assistant", "content": "Hello! Ask me about capitals."},
                {"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=CHAT, messages=messages, temperature=0, max_tokens=16)
    assert r.choices[0].message.content
    # Bedrock refuses it, as Bedrock does.
    r = requests.post(f"{server_url}/model/{CHAT}/converse", timeout=30, json={
        "messages": [{"role": "assistant", "content": [{"text": "Hello!"}]},
                     {"role": "user", "content": [{"text": "hi"}]}]})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"].startswith("ValidationException")
    assert "must start with a user message" in r.json()["message"]
