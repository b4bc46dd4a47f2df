"""The OpenAI Responses API through the openai SDK and the OpenAI Agents SDK, unmodified:
whole and streamed (event order checked by the SDK's own stream helper), stored responses
with `previous_response_id`, function calling and structured output — on the embedded model
and on each upstream type through the mock."""
import json

import jsonschema
import openai
import pytest
import requests
from openai import OpenAI

from conftest import Server
# `mock` is the module-scoped mock upstream fixture.
from test_upstreams import ALL_MODELS, OPENAI_MODEL, UPSTREAM_ENV, mock, translation_config  # noqa: F401

CHAT = "local.smollm2-135m-instruct"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": WEATHER, "strict": True}]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 30},
                   "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                            "maxItems": 3}},
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


@pytest.fixture
def client(server_url):
    return OpenAI(base_url=server_url + "/v1", api_key="unused", max_retries=0)


def test_a_whole_response_from_the_embedded_model(client):
    r = client.responses.create(model=CHAT, input="What is the capital of France?",
                                temperature=0, max_output_tokens=40)
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "completed" and r.model == CHAT
    assert "Paris" in r.output_text
    message = r.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.temperature == 0 and r.max_output_tokens == 40 and r.store is True


def test_the_stream_helper_accepts_the_event_sequence(client):
    kinds, deltas, numbers = [], [], []
    with client.responses.stream(model=CHAT, input="Name three colours.", temperature=0,
                                 max_output_tokens=40) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert numbers == list(range(len(numbers)))
    assert len(deltas) > 2 and "".join(deltas) == final.output_text
    again = client.responses.retrieve(final.id)
    assert again.output_text == final.output_text and again.status == "completed"


def test_max_output_tokens_makes_an_incomplete_response(client):
    r = client.responses.create(model=CHAT, input="Tell me a long story.", max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=CHAT, input="hi", max_output_tokens=8)
    assert "max_output_tokens" in str(e.value)


def test_stored_responses_chain_list_and_delete(client):
    first = client.responses.create(model=CHAT, input="My name is Ada.", temperature=0,
                                    max_output_tokens=20, instructions="Be brief.")
    second = client.responses.create(model=CHAT, previous_response_id=first.id, temperature=0,
                                      input=[{"role": "user", "content": "What is my name?"}],
                                      max_output_tokens=20)
    assert second.previous_response_id == first.id
    # The second call saw the first turn: its prompt holds the first question and answer.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens - 10
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "What is my name?"
    assert client.responses.retrieve(first.id).id == first.id

    unstored = client.responses.create(model=CHAT, input="hi", store=False, max_output_tokens=16)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)

    deleted = client.responses.delete(first.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=CHAT, previous_response_id=first.id, input="again?")
    assert e.value.code == "previous_response_not_found"


def test_input_items_pages(client):
    items = [{"role": "user", "content": f"Line {i}."} for i in range(5)]
    r = client.responses.create(model=CHAT, input=items, max_output_tokens=16)
    page = client.responses.input_items.list(r.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == ["Line 0.", "Line 1."]
    assert page.has_more
    rest = client.responses.input_items.list(r.id, limit=10, order="asc", after=page.last_id)
    assert [i.content[0].text for i in rest.data] == ["Line 2.", "Line 3.", "Line 4."]
    assert not rest.has_more
    newest = client.responses.input_items.list(r.id, limit=1)
    assert newest.data[0].content[0].text == "Line 4."


def test_function_calling_round_trip_on_the_embedded_model(client):
    r = client.responses.create(model=CHAT, input="What is the weather in Hanoi?", tools=TOOLS,
                                tool_choice="required", temperature=0, max_output_tokens=100)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    follow = client.responses.create(
        model=CHAT, previous_response_id=r.id, tools=TOOLS, temperature=0, max_output_tokens=60,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "Sunny, 31 degrees."}])
    assert follow.status in ("completed", "incomplete")
    assert follow.output_text or any(o.type == "function_call" for o in follow.output)


def test_a_streamed_function_call(client):
    with client.responses.stream(model=CHAT, input="Weather in Paris?", tools=TOOLS,
                                 tool_choice="required", temperature=0,
                                 max_output_tokens=100) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = [o for o in final.output if o.type == "function_call"][0]
    jsonschema.validate(json.loads(call.arguments), WEATHER)


def test_structured_output_with_text_format(client):
    r = client.responses.create(
        model=CHAT, input="Invent a person.", temperature=0, max_output_tokens=120,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON,
                         "strict": True}})
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.text.format.type == "json_schema"


def test_logprobs_on_output_text(client):
    r = client.responses.create(model=CHAT, input="Capital of France?", temperature=0,
                                max_output_tokens=16, top_logprobs=2,
                                include=["message.output_text.logprobs"])
    lp = r.output[0].content[0].logprobs
    assert len(lp) == r.usage.output_tokens
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lp)


def test_bad_input_is_refused_in_the_openai_shape(server_url, client):
    for body, needle in [
        ({"model": CHAT, "input": [{"type": "web_search_call"}]}, "input[0].type"),
        ({"model": CHAT, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": CHAT, "input": "hi", "background": True}, "background"),
        ({"model": CHAT, "input": "hi", "temperature": "hot"}, "temperature"),
        ({"model": CHAT, "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": CHAT}, "input"),
    ]:
        r = requests.post(server_url + "/v1/responses", json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
        assert needle in r.json()["error"]["message"], r.text
    r = requests.get(server_url + "/v1/responses/resp_missing", timeout=10)
    assert r.status_code == 404 and "resp_missing" in r.json()["error"]["message"]


def test_the_agents_sdk_runs_a_one_tool_agent(server_url):
    agents = pytest.importorskip("agents")
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool

    agents.set_tracing_disabled(True)
    seen = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"It is sunny in {city}."

    model = OpenAIResponsesModel(
        model=CHAT,
        openai_client=openai.AsyncOpenAI(base_url=server_url + "/v1", api_key="unused",
                                         max_retries=0))
    agent = Agent(name="weather", instructions="Answer questions about the weather.",
                  tools=[get_weather], model=model,
                  model_settings=ModelSettings(tool_choice="required", temperature=0,
                                               max_tokens=80))
    result = Runner.run_sync(agent, "What is the weather in Hanoi?", max_turns=4)
    assert seen, "the agent called its tool"
    assert isinstance(result.final_output, str) and result.final_output.strip()


# --- every upstream type, through the mock ---

@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    config = translation_config(mock, local=False)
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("resp")),
                    env=UPSTREAM_ENV)
    yield server
    server.stop()


def sent_texts(body):
    return json.dumps(body)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_upstream_streams_calls_and_continues(gateway, mock, model):
    mock.reset()
    client = OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    mock.push({"blocks": [{"text": "Checking."},
                          {"tool_call": {"id": "call_9", "name": "get_weather",
                                         "arguments": {"city": "Paris", "unit": "celsius"}}}],
               "split": 3, "pieces": 1, "usage": [20, 8]})
    with client.responses.stream(model=model, input="Weather in Paris?", tools=TOOLS) as stream:
        kinds = [e.type for e in stream]
        first = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [o.type for o in first.output] == ["message", "function_call"]
    call = first.output[1]
    assert call.call_id == "call_9" and json.loads(call.arguments)["city"] == "Paris"
    assert first.output_text == "Checking."
    assert first.usage.input_tokens == 20 and first.usage.output_tokens == 8
    sent = mock.requests()[-1]["body"]
    assert "get_weather" in sent_texts(sent)

    mock.push({"blocks": [{"text": "It is sunny."}]})
    second = client.responses.create(
        model=model, previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": "call_9", "output": "sunny, 24C"}])
    assert second.output_text == "It is sunny."
    history = sent_texts(mock.requests()[-1]["body"])
    # The upstream saw the whole conversation: question, call and result.
    assert "Weather in Paris?" in history and "call_9" in history and "sunny, 24C" in history


@pytest.mark.parametrize("model", ALL_MODELS)
def test_every_upstream_whole_with_structured_output(gateway, mock, model):
    mock.reset()
    client = OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    mock.push({"blocks": [{"text": "{\"name\": \"Ada\", \"age\": 36, \"tags\": []}"}]})
    r = client.responses.create(
        model=model, input="Invent a person.", instructions="Answer in JSON.",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON}})
    jsonschema.validate(json.loads(r.output_text), PERSON)
    sent = sent_texts(mock.requests()[-1]["body"])
    assert "Answer in JSON." in sent and "maxItems" in sent


def test_an_upstream_failure_mid_stream_is_response_failed(gateway, mock):
    mock.reset()
    client = OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    mock.push({"blocks": [{"text": "This answer is cut off before it ends."}], "pieces": 8,
               "cut_after": 6})
    events = list(client.responses.create(model=OPENAI_MODEL, input="hi", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed" and events[-1].response.error.message
