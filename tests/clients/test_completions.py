"""The legacy Completions API (`POST /v1/completions`) through the official openai SDK,
against the embedded model: whole and streamed (the same text at temperature 0), a list of
prompts, `echo`, `max_tokens` ending in `length`, and the parameters it refuses by name."""
import openai
import pytest
from openai import OpenAI

CHAT = "local.smollm2-135m-instruct"
PROMPT = "What is the capital of France?"


@pytest.fixture
def client(server_url):
    return OpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0)


def test_completion_whole_and_streamed_agree(client):
    r = client.completions.create(model=CHAT, prompt=PROMPT, max_tokens=24, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert "Paris" in r.choices[0].text
    assert r.choices[0].index == 0 and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    stream = client.completions.create(model=CHAT, prompt=PROMPT, max_tokens=24, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.text)
            finish = c.finish_reason or finish
    assert "".join(pieces) == r.choices[0].text
    assert finish == r.choices[0].finish_reason
    assert usage.completion_tokens == r.usage.completion_tokens


def test_a_list_of_prompts_echo_and_max_tokens(client):
    r = client.completions.create(model=CHAT, prompt=[PROMPT, "Name a colour."], max_tokens=3,
                                  temperature=0, echo=True)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text.startswith(PROMPT) and len(r.choices[0].text) > len(PROMPT)
    assert r.choices[1].text.startswith("Name a colour.")
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 6


@pytest.mark.parametrize("extra,param", [
    ({"suffix": " and that is all."}, "suffix"),
    ({"logprobs": 6}, "logprobs"),
    ({"logprobs": 2, "echo": True}, "logprobs"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"prompt": [[1, 2, 3]]}, "prompt"),
    ({"max_tokens": 0}, "max_tokens"),
])
def test_unsupported_parameters_are_refused_by_name(client, extra, param):
    args = {"model": CHAT, "prompt": PROMPT, **extra}
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**args)
    assert param in str(e.value)


def test_a_streamed_list_of_prompts_is_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        list(client.completions.create(model=CHAT, prompt=["a", "b"], stream=True))
    assert "one prompt" in str(e.value)
