"""The parameter-fate matrix: front door × upstream × parameter.

Every parameter a caller sends is forwarded, mapped, dropped with `x-modelgate-dropped-params`,
kept by the gateway, or refused before any upstream call — never silently lost
(docs/front-doors.md, "Parameter fates per upstream"). Each case sends one request per
upstream — the test kit's mock as an OpenAI-compatible, an Anthropic and a Bedrock upstream,
and the embedded model — and checks what the upstream received, the header, or the refusal.
"""
import pytest
import requests

from conftest import Server
# `mock` is the module-scoped mock upstream fixture.
from test_upstreams import (ANTHROPIC_TOOLS, BEDROCK_MODEL, OPENAI_TOOLS, UPSTREAM_ENV,  # noqa: F401
                            mock, translation_config)

UPSTREAMS = {"openai": "gpt-up", "anthropic": "claude-up", "bedrock": BEDROCK_MODEL,
             "embedded": "local.smollm2-135m-instruct"}
QUESTION = "Say hi."


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    config = translation_config(mock)
    server = Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp("fates")),
                    env=UPSTREAM_ENV)
    yield server
    server.stop()


def call(gateway, door, model, params):
    """One request through `door` with `params` added to a minimal body."""
    if door == "openai":
        body = {"model": model, "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 8, **params}
        return requests.post(gateway.url + "/v1/chat/completions", json=body, timeout=120)
    if door == "anthropic":
        body = {"model": model, "max_tokens": 8,
                "messages": [{"role": "user", "content": QUESTION}], **params}
        return requests.post(gateway.url + "/v1/messages", json=body, timeout=120,
                             headers={"anthropic-version": "2023-06-01"})
    body = {"messages": [{"role": "user", "content": [{"text": QUESTION}]}],
            "inferenceConfig": {"maxTokens": 8}, **params}
    return requests.post(f"{gateway.url}/model/{model}/converse", json=body, timeout=120)


def at(body, path):
    """The member of `body` at a dotted path, or a sentinel when it is missing."""
    for key in path.split("."):
        if not isinstance(body, dict) or key not in body:
            return MISSING
        body = body[key]
    return body


MISSING = object()

# (door, params, {upstream: fate}). Fates:
#   ("sent", path, value)  — the upstream got `value` at `path`; no dropped header
#   ("dropped", names…)    — 200, the header names exactly these, the upstream got none of them
#   ("kept", path)         — 200, no header, and the upstream body has nothing at `path`
#   ("refused", text)      — 400 naming the parameter, and no upstream call
#   ("honoured",)          — the embedded model took it: 200 and no dropped header
CASES = [
    ("openai", {"seed": 7}, {
        "openai": ("sent", "seed", 7), "anthropic": ("dropped", "seed"),
        "bedrock": ("dropped", "seed"), "embedded": ("honoured",)}),
    ("openai", {"logprobs": True, "top_logprobs": 2}, {
        "openai": ("sent", "top_logprobs", 2), "anthropic": ("refused", "logprobs"),
        "bedrock": ("refused", "logprobs"), "embedded": ("honoured",)}),
    ("openai", {"top_k": 5}, {
        "openai": ("sent", "top_k", 5), "anthropic": ("sent", "top_k", 5),
        "bedrock": ("sent", "additionalModelRequestFields.top_k", 5),
        "embedded": ("honoured",)}),
    ("openai", {"frequency_penalty": 0.5, "presence_penalty": 0.25}, {
        "openai": ("sent", "presence_penalty", 0.25),
        "anthropic": ("dropped", "frequency_penalty", "presence_penalty"),
        "bedrock": ("dropped", "frequency_penalty", "presence_penalty"),
        "embedded": ("honoured",)}),
    ("openai", {"logit_bias": {"42": 3}}, {
        "openai": ("sent", "logit_bias", {"42": 3.0}), "anthropic": ("refused", "logit_bias"),
        "bedrock": ("refused", "logit_bias"), "embedded": ("honoured",)}),
    ("openai", {"user": "user-42"}, {
        "openai": ("sent", "user", "user-42"), "anthropic": ("sent", "metadata.user_id", "user-42"),
        "bedrock": ("sent", "requestMetadata.user", "user-42"), "embedded": ("honoured",)}),
    ("openai", {"user": "Bob <bob@example.com>"}, {
        "openai": ("sent", "user", "Bob <bob@example.com>"),
        "anthropic": ("sent", "metadata.user_id", "Bob <bob@example.com>"),
        "bedrock": ("dropped", "user"), "embedded": ("honoured",)}),
    ("openai", {"parallel_tool_calls": False, "tools": OPENAI_TOOLS}, {
        "openai": ("sent", "parallel_tool_calls", False),
        "anthropic": ("sent", "tool_choice.disable_parallel_tool_use", True),
        "bedrock": ("dropped", "parallel_tool_calls"), "embedded": ("honoured",)}),
    ("openai", {"store": True, "service_tier": "flex"}, {
        "openai": ("sent", "service_tier", "flex"),
        "anthropic": ("dropped", "store", "service_tier"),
        "bedrock": ("dropped", "store", "service_tier"),
        "embedded": ("dropped", "store", "service_tier")}),
    ("openai", {"metadata": {"team": "a"}}, {
        "openai": ("sent", "metadata", {"team": "a"}), "anthropic": ("kept", "metadata"),
        "bedrock": ("kept", "requestMetadata"), "embedded": ("honoured",)}),
    ("openai", {"web_search_options": {}}, {
        "openai": ("sent", "web_search_options", {}),
        "anthropic": ("refused", "web_search_options"),
        "bedrock": ("refused", "web_search_options"),
        "embedded": ("refused", "web_search_options")}),
    ("openai", {"min_p": 0.1}, {
        "openai": ("sent", "min_p", 0.1),
        "anthropic": ("refused", "Unrecognized request argument supplied: min_p"),
        "bedrock": ("refused", "Unrecognized request argument supplied: min_p"),
        "embedded": ("refused", "Unrecognized request argument supplied: min_p")}),
    ("anthropic", {"top_k": 5}, {
        "openai": ("sent", "top_k", 5), "anthropic": ("sent", "top_k", 5),
        "bedrock": ("sent", "additionalModelRequestFields.top_k", 5),
        "embedded": ("honoured",)}),
    ("anthropic", {"metadata": {"user_id": "u-1"}}, {
        "openai": ("sent", "user", "u-1"), "anthropic": ("sent", "metadata.user_id", "u-1"),
        "bedrock": ("sent", "requestMetadata.user", "u-1"), "embedded": ("honoured",)}),
    ("anthropic", {"tools": ANTHROPIC_TOOLS,
                   "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}, {
        "openai": ("sent", "parallel_tool_calls", False),
        "anthropic": ("sent", "tool_choice.disable_parallel_tool_use", True),
        "bedrock": ("dropped", "parallel_tool_calls"), "embedded": ("honoured",)}),
    ("anthropic", {"service_tier": "auto", "output_config": {"effort": "low"}}, {
        "openai": ("dropped", "service_tier", "output_config.effort"),
        "anthropic": ("sent", "output_config.effort", "low"),
        "bedrock": ("dropped", "service_tier", "output_config.effort"),
        "embedded": ("dropped", "service_tier", "output_config.effort")}),
    ("anthropic", {"container": "container_1"}, {
        "openai": ("refused", "container"), "anthropic": ("sent", "container", "container_1"),
        "bedrock": ("refused", "container"), "embedded": ("refused", "container")}),
    ("anthropic", {"future_param": 1}, {
        "openai": ("refused", "future_param: Extra inputs are not permitted"),
        "anthropic": ("sent", "future_param", 1),
        "bedrock": ("refused", "future_param: Extra inputs are not permitted"),
        "embedded": ("refused", "future_param: Extra inputs are not permitted")}),
    ("converse", {"additionalModelRequestFields": {"top_k": 5}}, {
        "openai": ("sent", "top_k", 5), "anthropic": ("sent", "top_k", 5),
        "bedrock": ("sent", "additionalModelRequestFields.top_k", 5),
        "embedded": ("honoured",)}),
    ("converse", {"additionalModelRequestFields": {"anthropic_beta": ["b1"]}}, {
        "openai": ("dropped", "additionalModelRequestFields.anthropic_beta"),
        "anthropic": ("dropped", "additionalModelRequestFields.anthropic_beta"),
        "bedrock": ("sent", "additionalModelRequestFields.anthropic_beta", ["b1"]),
        "embedded": ("dropped", "additionalModelRequestFields.anthropic_beta")}),
    ("converse", {"performanceConfig": {"latency": "optimized"},
                  "serviceTier": {"type": "priority"}}, {
        "openai": ("dropped", "performanceConfig", "serviceTier"),
        "anthropic": ("dropped", "performanceConfig", "serviceTier"),
        "bedrock": ("sent", "serviceTier", {"type": "priority"}),
        "embedded": ("dropped", "performanceConfig", "serviceTier")}),
    ("converse", {"additionalModelResponseFieldPaths": ["/stop_sequence"]}, {
        "openai": ("dropped", "additionalModelResponseFieldPaths"),
        "anthropic": ("dropped", "additionalModelResponseFieldPaths"),
        "bedrock": ("sent", "additionalModelResponseFieldPaths", ["/stop_sequence"]),
        "embedded": ("dropped", "additionalModelResponseFieldPaths")}),
    ("converse", {"requestMetadata": {"team": "a"}}, {
        "openai": ("kept", "metadata"), "anthropic": ("kept", "metadata"),
        "bedrock": ("sent", "requestMetadata", {"team": "a"}), "embedded": ("honoured",)}),
]


def case_id(case):
    door, params, _ = case
    return f"{door}-{'-'.join(params)}"


@pytest.mark.parametrize("upstream", list(UPSTREAMS))
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_parameter_fate(gateway, mock, case, upstream):
    door, params, fates = case
    fate = fates[upstream]
    mock.reset()
    if upstream != "embedded":
        mock.push({"blocks": [{"text": "Hi."}]})
    r = call(gateway, door, UPSTREAMS[upstream], params)
    kind = fate[0]
    if kind == "refused":
        assert r.status_code == 400, r.text
        assert fate[1] in r.text, r.text
        assert mock.calls() == 0, "a refused request never reaches the upstream"
        return
    assert r.status_code == 200, r.text
    dropped = r.headers.get("x-modelgate-dropped-params")
    sent = mock.requests()[-1]["body"] if upstream != "embedded" else None
    if kind == "dropped":
        assert dropped is not None, "a dropped parameter is named"
        assert sorted(dropped.split(", ")) == sorted(fate[1:])
        if sent is not None:
            for name in fate[1:]:
                assert at(sent, name) is MISSING, sent
        return
    assert dropped is None, dropped
    if kind == "sent":
        assert at(sent, fate[1]) == fate[2], sent
    elif kind == "kept":
        assert at(sent, fate[1]) is MISSING, sent


def test_openai_door_forwards_the_whole_body_of_an_extension(gateway, mock):
    """A vLLM-style request with several extensions and OpenAI's own non-canonical members
    reaches an OpenAI-compatible upstream exactly as sent, next to the canonical ones."""
    mock.reset()
    mock.push({"blocks": [{"text": "Hi."}]})
    extras = {"min_p": 0.05, "repetition_penalty": 1.1, "guided_json": {"type": "object"},
              "store": False, "prediction": {"type": "content", "content": "Hi."},
              "metadata": {"a": "b"}}
    r = call(gateway, "openai", "gpt-up", {**extras, "temperature": 0.2})
    assert r.status_code == 200, r.text
    sent = mock.requests()[-1]["body"]
    for k, v in extras.items():
        assert sent[k] == v, (k, sent)
    assert sent["temperature"] == pytest.approx(0.2)
    assert "x-modelgate-dropped-params" not in r.headers


def test_dropped_params_are_named_on_streams_too(gateway, mock):
    """The header rides on the stream's response head, as on whole answers."""
    mock.reset()
    mock.push({"blocks": [{"text": "Hi."}]})
    r = call(gateway, "openai", "claude-up", {"seed": 3, "presence_penalty": 1, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["x-modelgate-dropped-params"] == "seed, presence_penalty"
    assert "data: [DONE]" in r.text


def test_invoke_model_refuses_members_bedrock_does_not_define(gateway, mock):
    """InvokeModel's Anthropic body is Bedrock's: an unknown member is a ValidationException
    there, as on Bedrock, while `top_k` maps and the Messages-API extras are native."""
    mock.reset()
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8,
            "messages": [{"role": "user", "content": QUESTION}], "bogus": 1}
    r = requests.post(f"{gateway.url}/model/claude-up/invoke", json=body, timeout=30)
    assert r.status_code == 400 and "extraneous key [bogus]" in r.text, r.text
    assert r.headers["x-amzn-ErrorType"].startswith("ValidationException")
    mock.push({"blocks": [{"text": "Hi."}]})
    del body["bogus"]
    body["top_k"] = 9
    r = requests.post(f"{gateway.url}/model/claude-up/invoke", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert mock.requests()[-1]["body"]["top_k"] == 9
