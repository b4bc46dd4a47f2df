"""The response cache through the real binary and real clients (openai SDK, anthropic SDK,
boto3), with the test kit's mock upstream counting what reaches it: exact hits in every
dialect, whole and streamed, from one stored answer; tenant scoping; what is never stored;
per-request controls; the admin API; metrics; the stale level; two processes sharing Redis.
"""
import json
import random
import time
import uuid

import anthropic
import openai
import pytest
import requests

from conftest import Server
from test_upstreams import UPSTREAM_ENV, Mock, mock_providers

ADMIN = "mg-test-admin-credential-cache"
ENV = {"MG_TEST_ADMIN_KEY": ADMIN, **UPSTREAM_ENV}
GPT = "gpt-up"
CLAUDE = "claude-up"
BEDROCK = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def config(mock, extra="", cache="enabled = true"):
    return f"""
[local]
enabled = false

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"

[cache]
{cache}

[resilience.retry]
max_attempts = 1

[resilience.breaker]
enabled = false

{mock_providers(mock)}
[[models]]
id = "{GPT}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[[models]]
id = "{CLAUDE}"
provider = "mock-anthropic"
upstream_id = "claude-3-5-haiku-latest"

[[models]]
id = "{BEDROCK}"
provider = "mock-bedrock"
upstream_id = "anthropic.claude-3-5-sonnet-20240620-v1:0"

[[models]]
id = "never-cached"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"
cache = false

[prices.{GPT}]
input = 1.0
output = 2.0
{extra}
"""


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    server = Server(config_text=config(mock), tmp_path=str(tmp_path_factory.mktemp("cache")),
                    env=ENV)
    yield server
    server.stop()


def new_key(gw, team):
    r = requests.post(gw.url + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"},
                      json={"name": f"k-{uuid.uuid4().hex[:6]}", "team": team}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def key(gw):
    return new_key(gw, "alpha")


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def oai(gw, key):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key["key"], max_retries=0)


def unique(text):
    """A prompt no other test sends (the cache lives as long as the module's gateway)."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def answer(text, usage=(11, 7), stop=None):
    """One text block, sent in four pieces when streamed."""
    r = {"blocks": [{"text": text}], "usage": list(usage), "pieces": 4}
    if stop:
        r["stop"] = stop
    return r


def openai_stream(client, prompt, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}], stream=True,
        stream_options={"include_usage": True}, **kw)
    text, finish, usage, roles = "", None, None, []
    for chunk in raw.parse():
        if chunk.usage is not None:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    return raw.headers, (roles, text, finish, usage)


def test_openai_sdk_whole_and_streamed_hits_replay_the_answer(gw, key, mock):
    c = oai(gw, key)
    prompt = unique("What is a cache?")
    mock.push(answer("A cache keeps answers."))
    first = c.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}], temperature=0)
    second = c.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}], temperature=0)
    assert first.headers["x-modelgate-cache"] == "miss"
    assert second.headers["x-modelgate-cache"] == "hit"
    assert second.headers["x-modelgate-served-by"] == "cache"
    assert second.headers["x-modelgate-cache-key"] == first.headers["x-modelgate-cache-key"]
    assert mock.calls() == 1
    a, b = first.parse(), second.parse()
    assert b.choices[0].message.content == a.choices[0].message.content == "A cache keeps answers."
    assert (b.usage.prompt_tokens, b.usage.completion_tokens) == (11, 7)
    assert b.choices[0].finish_reason == a.choices[0].finish_reason == "stop"
    assert b.model == GPT

    # Streamed: a miss, then a hit whose events carry the same text, usage and finish reason.
    prompt = unique("Stream me a cache")
    mock.push(answer("Streamed cache answer."))
    h1, miss = openai_stream(c, prompt)
    h2, hit = openai_stream(c, prompt)
    assert (h1["x-modelgate-cache"], h2["x-modelgate-cache"]) == ("miss", "hit")
    assert hit == miss
    assert miss == (["assistant"], "Streamed cache answer.", "stop", (11, 7))
    assert mock.calls() == 2

    # One stored answer serves both forms: the whole answer of a streamed miss.
    whole = c.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}], temperature=0.0)
    # temperature 0 is a different request from "no temperature": a miss.
    assert whole.headers["x-modelgate-cache"] == "miss"
    mock.push(answer("x"))
    h3, again = openai_stream(c, prompt)
    assert h3["x-modelgate-cache"] == "hit" and again == miss


def test_boto3_converse_stream_hit_has_the_same_events(gw, key, mock):
    from botocore.config import Config
    import boto3
    client = boto3.client("bedrock-runtime", endpoint_url=gw.url, region_name="us-east-1",
                          aws_access_key_id=key["access_key_id"],
                          aws_secret_access_key=key["secret_access_key"],
                          config=Config(retries={"total_max_attempts": 1}))
    prompt = unique("Tell me about caches")
    mock.push(answer("Caches are fast."))

    def run():
        r = client.converse_stream(modelId=BEDROCK,
                                   messages=[{"role": "user", "content": [{"text": prompt}]}])
        events = []
        for event in r["stream"]:
            kind = next(iter(event))
            body = event[kind]
            if kind == "metadata":
                body = {"usage": body["usage"]}
            events.append((kind, json.dumps(body, sort_keys=True)))
        return r["ResponseMetadata"]["HTTPHeaders"], events

    h1, miss = run()
    h2, hit = run()
    assert (h1["x-modelgate-cache"], h2["x-modelgate-cache"]) == ("miss", "hit")
    assert mock.calls() == 1

    def fold(events):
        # The text may arrive in other pieces; everything else is event for event the same.
        out, text = [], ""
        for kind, body in events:
            if kind == "contentBlockDelta":
                text += json.loads(body)["delta"]["text"]
                continue
            out.append((kind, body))
        return out, text

    assert fold(hit) == fold(miss)
    kinds = [k for k, _ in fold(hit)[0]]
    assert kinds == ["messageStart", "contentBlockStop", "messageStop", "metadata"]
    assert fold(hit)[1] == "Caches are fast."
    usage = json.loads(dict(fold(hit)[0])["metadata"])["usage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == (11, 7)


def test_anthropic_sdk_hits_whole_and_streamed(gw, key, mock):
    c = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
    prompt = unique("Explain caching")
    mock.push(answer("Caching saves work."))
    msgs = [{"role": "user", "content": prompt}]
    first = c.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=msgs)
    second = c.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=msgs)
    assert (first.headers["x-modelgate-cache"], second.headers["x-modelgate-cache"]) == (
        "miss", "hit")
    a, b = first.parse(), second.parse()
    assert [x.text for x in b.content] == [x.text for x in a.content] == ["Caching saves work."]
    assert (b.usage.input_tokens, b.usage.output_tokens) == (11, 7)
    assert b.stop_reason == a.stop_reason == "end_turn"
    assert mock.calls() == 1

    def stream():
        events = []
        with c.messages.stream(model=CLAUDE, max_tokens=64, messages=msgs) as s:
            for e in s:
                if e.type in ("text", "content_block_delta"):
                    continue
                events.append(e.type)
            final = s.get_final_message()
        return events, final

    events, final = stream()
    assert mock.calls() == 1, "the streamed call is a hit of the whole answer"
    assert final.content[0].text == "Caching saves work."
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7)
    assert final.stop_reason == "end_turn"
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "message_delta" in events

    # A streamed miss, then its streamed hit: the same events (text deltas aside), text,
    # usage and stop reason.
    msgs = [{"role": "user", "content": unique("Stream a cache")}]
    mock.push(answer("Streams are cached too."))
    miss_events, miss = stream()
    hit_events, hit = stream()
    assert mock.calls() == 2
    assert hit_events == miss_events
    assert [b.text for b in hit.content] == [b.text for b in miss.content] == [
        "Streams are cached too."]
    assert (hit.usage.input_tokens, hit.usage.output_tokens) == (
        miss.usage.input_tokens, miss.usage.output_tokens) == (11, 7)
    assert hit.stop_reason == miss.stop_reason == "end_turn"


def test_tenants_never_see_each_others_answers(gw, mock):
    teams = [f"tenant-{i}" for i in range(10)]
    keys = {t: new_key(gw, t) for t in teams}
    clients = {t: oai(gw, keys[t]) for t in teams}
    prompts = [unique(f"shared question {i}") for i in range(8)]
    rng = random.Random(1234)
    seen = set()
    hits = misses = 0
    for _ in range(1000):
        team, prompt = rng.choice(teams), rng.choice(prompts)
        raw = clients[team].chat.completions.with_raw_response.create(
            model=GPT, messages=[{"role": "user", "content": prompt}])
        status = raw.headers["x-modelgate-cache"]
        # A hit only where this tenant asked before: never another tenant's answer.
        assert status == ("hit" if (team, prompt) in seen else "miss"), (team, prompt)
        hits += status == "hit"
        misses += status == "miss"
        seen.add((team, prompt))
    assert misses == len(seen) and hits == 1000 - misses
    assert mock.calls() == misses

    # Two keys of one team share its cache (the default scope is the team).
    other = oai(gw, new_key(gw, teams[0]))
    prompt = next(p for t, p in seen if t == teams[0])
    raw = other.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-modelgate-cache"] == "hit"


def test_errors_truncations_tool_calls_and_cancelled_streams_are_not_stored(gw, key, mock):
    c = oai(gw, key)

    def ask(prompt, **kw):
        return c.chat.completions.with_raw_response.create(
            model=GPT, messages=[{"role": "user", "content": prompt}], **kw)

    # An upstream error: nothing stored, the next identical call goes upstream.
    prompt = unique("error please")
    mock.push({"status": 500, "message": "boom"})
    with pytest.raises(openai.InternalServerError):
        ask(prompt)
    assert ask(prompt).headers["x-modelgate-cache"] == "miss"
    assert mock.calls() == 2

    # Cut short by max_tokens: not stored.
    prompt = unique("long answer")
    mock.push(answer("cut", stop="max_tokens"))
    assert ask(prompt, max_tokens=3).parse().choices[0].finish_reason == "length"
    assert ask(prompt, max_tokens=3).headers["x-modelgate-cache"] == "miss"
    assert mock.calls() == 4

    # A tool call: not stored unless [cache] tool_calls = true.
    prompt = unique("weather?")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {}}}}]
    for _ in range(2):
        mock.push({"blocks": [{"tool_call": {"name": "get_weather", "arguments": {}}}]})
        raw = ask(prompt, tools=tools)
        assert raw.parse().choices[0].finish_reason == "tool_calls"
        assert raw.headers["x-modelgate-cache"] == "miss"
    assert mock.calls() == 6

    # A stream the client leaves after its first chunk: not stored.
    prompt = unique("slow stream")
    mock.push({**answer("one two three four"), "chunk_delay_ms": 200})
    with requests.post(gw.url + "/v1/chat/completions", stream=True, timeout=10,
                       headers={"Authorization": f"Bearer {key['key']}"},
                       json={"model": GPT, "stream": True,
                             "messages": [{"role": "user", "content": prompt}]}) as r:
        next(r.iter_lines())
    time.sleep(1.5)
    assert ask(prompt).headers["x-modelgate-cache"] == "miss"
    assert mock.calls() == 8


def test_request_controls(gw, key, mock):
    c = oai(gw, key)
    msgs = lambda p: [{"role": "user", "content": p}]  # noqa: E731
    prompt = unique("controls")
    c.chat.completions.create(model=GPT, messages=msgs(prompt))
    # no-cache: not served from the cache (a forced refresh), the fresh answer replaces it.
    raw = c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(prompt), extra_headers={"Cache-Control": "no-cache"})
    assert raw.headers["x-modelgate-cache"] == "bypass"
    assert mock.calls() == 2
    # The OpenAI-body convention LiteLLM clients send.
    raw = c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(prompt), extra_body={"cache": {"no-cache": True}})
    assert raw.headers["x-modelgate-cache"] == "bypass"
    assert mock.calls() == 3
    # no-store: neither read nor written.
    other = unique("not stored")
    for _ in range(2):
        raw = c.chat.completions.with_raw_response.create(
            model=GPT, messages=msgs(other), extra_headers={"Cache-Control": "no-store"})
        assert "x-modelgate-cache" not in raw.headers
    assert c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(other)).headers["x-modelgate-cache"] == "miss"
    assert mock.calls() == 6
    # Namespaces partition a caller's cache.
    ns = c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(prompt), extra_headers={"x-modelgate-cache-namespace": "blue"})
    assert ns.headers["x-modelgate-cache"] == "miss"
    assert c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(prompt),
        extra_headers={"x-modelgate-cache-namespace": "blue"}).headers["x-modelgate-cache"] == "hit"
    # A per-request TTL: expired after it.
    short = unique("short-lived")
    c.chat.completions.create(model=GPT, messages=msgs(short),
                              extra_headers={"x-modelgate-cache-ttl": "1"})
    assert c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(short)).headers["x-modelgate-cache"] == "hit"
    time.sleep(1.3)
    assert c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(short)).headers["x-modelgate-cache"] == "miss"
    # max-age: only entries younger than it.
    assert c.chat.completions.with_raw_response.create(
        model=GPT, messages=msgs(prompt),
        extra_headers={"Cache-Control": "max-age=0"}).headers["x-modelgate-cache"] == "miss"
    # A model with cache = false is never cached.
    for _ in range(2):
        raw = c.chat.completions.with_raw_response.create(model="never-cached", messages=msgs(prompt))
        assert "x-modelgate-cache" not in raw.headers
    # Bad values are 400s in the caller's dialect, naming the setting.
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=GPT, messages=msgs(prompt),
                                  extra_headers={"x-modelgate-cache-ttl": "soon"})
    assert "x-modelgate-cache-ttl" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=GPT, messages=msgs(prompt),
                                  extra_body={"cache": {"ttl": "forever"}})
    assert "cache.ttl" in str(e.value)
    ac = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        ac.messages.create(model=CLAUDE, max_tokens=8, messages=msgs(prompt),
                           extra_body={"cache": {"namespace": "no spaces allowed"}})
    assert "cache.namespace" in str(e.value)


def admin(gw, method, **params):
    return requests.request(method, gw.url + "/admin/cache", params=params, timeout=10,
                            headers={"Authorization": f"Bearer {ADMIN}"})


def test_admin_api_inspects_and_invalidates_and_metrics_count(gw, key, mock):
    c = oai(gw, key)
    prompt = unique("admin me")
    first = c.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}])
    k = first.headers["x-modelgate-cache-key"]
    listed = admin(gw, "GET", key=k)
    assert listed.status_code == 200, listed.text
    [entry] = listed.json()["data"]
    assert entry["model"] == GPT and entry["scope"] == "team:alpha"
    assert entry["namespace"] == "default" and entry["bytes"] > 0
    # The entry's content is never listed.
    assert prompt not in listed.text
    hit = c.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}])
    assert hit.headers["x-modelgate-cache"] == "hit"
    # Invalidate one key, then by model; a flush needs all=true.
    assert admin(gw, "DELETE", key=k).json() == {"removed": 1}
    again = c.chat.completions.with_raw_response.create(
        model=GPT, messages=[{"role": "user", "content": prompt}])
    assert again.headers["x-modelgate-cache"] == "miss"
    assert admin(gw, "DELETE", model=GPT).json()["removed"] >= 1
    assert admin(gw, "GET", model=GPT).json()["data"] == []
    bad = admin(gw, "DELETE")
    assert bad.status_code == 400 and "all=true" in bad.json()["error"]["message"]
    assert admin(gw, "GET", key="xyz").status_code == 400
    no_admin = requests.get(gw.url + "/admin/cache", timeout=10,
                            headers={"Authorization": f"Bearer {key['key']}"})
    assert no_admin.status_code == 403
    # Metrics: lookups by result and what the hits saved (priced like a real call).
    metrics = requests.get(gw.url + "/metrics", timeout=10).text
    lines = [l for l in metrics.splitlines() if l.startswith("modelgate_cache_")]
    assert any(l.startswith('modelgate_cache_lookups_total{model="gpt-up",status="hit"}')
               for l in lines), lines
    saved = [l for l in lines if l.startswith("modelgate_cache_saved_usd_total")]
    assert saved and float(saved[0].split()[-1]) > 0
    assert any(l.startswith("modelgate_cache_saved_tokens_total") for l in lines)


def test_the_stale_level_serves_the_last_good_answer_when_everything_failed(
        mock, tmp_path_factory):
    extra = f"""
[[models]]
id = "guarded"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"
fallback_cache = true
"""
    server = Server(config_text=config(mock, extra, cache="enabled = false"),
                    tmp_path=str(tmp_path_factory.mktemp("stale")),
                    env=ENV)
    try:
        k = new_key(server, "stale-team")
        c = oai(server, k)
        prompt = [{"role": "user", "content": unique("remember me")}]
        mock.push(answer("remembered"))
        first = c.chat.completions.with_raw_response.create(model="guarded", messages=prompt)
        assert "x-modelgate-cache" not in first.headers, "the cache is off: no lookups"
        assert first.parse().choices[0].message.content == "remembered"
        mock.push({"status": 503, "message": "down"})
        raw = c.chat.completions.with_raw_response.create(model="guarded", messages=prompt)
        assert raw.headers["x-modelgate-cache"] == "stale"
        assert raw.headers["x-modelgate-served-by"] == "cache"
        assert raw.headers["x-modelgate-fallback-reason"] == "upstream_error"
        assert raw.parse().choices[0].message.content == "remembered"
        assert mock.calls() == 2
        # Another tenant has no last good answer of its own: the error goes through.
        other = oai(server, new_key(server, "other-team"))
        mock.push({"status": 503, "message": "down"})
        with pytest.raises(openai.InternalServerError):
            other.chat.completions.create(model="guarded", messages=prompt)
    finally:
        server.stop()


def test_two_processes_share_the_redis_cache(mock, tmp_path_factory):
    prefix = f"mgtest-{uuid.uuid4().hex[:8]}:"
    cache = 'enabled = true\nbackend = "redis"'
    extra = f'\n[store]\nredis_url = "redis://127.0.0.1:6379"\nredis_prefix = "{prefix}"\n'
    # Both replicas share one key store (PostgreSQL would in production; one SQLite file here).
    state = str(tmp_path_factory.mktemp("shared") / "state.db")
    servers = [Server(config_text=config(mock, extra, cache),
                      tmp_path=str(tmp_path_factory.mktemp(f"replica{i}")),
                      env={**ENV, "MODELGATE_STATE_DB": state})
               for i in range(2)]
    try:
        a, b = servers
        k = new_key(a, "shared-team")
        prompt = [{"role": "user", "content": unique("replicated")}]
        mock.push(answer("shared answer"))
        first = oai(a, k).chat.completions.with_raw_response.create(model=GPT, messages=prompt)
        assert first.headers["x-modelgate-cache"] == "miss"
        deadline = time.monotonic() + 5
        while True:  # the write to Redis is in the background
            raw = oai(b, k).chat.completions.with_raw_response.create(model=GPT, messages=prompt)
            if raw.headers["x-modelgate-cache"] == "hit" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert raw.headers["x-modelgate-cache"] == "hit"
        assert raw.parse().choices[0].message.content == "shared answer"
        # Invalidation on one replica is seen by the other.
        key_hex = first.headers["x-modelgate-cache-key"]
        assert admin(b, "GET", key=key_hex).json()["data"][0]["scope"] == "team:shared-team"
        assert admin(a, "DELETE", key=key_hex).json() == {"removed": 1}
        assert oai(b, k).chat.completions.with_raw_response.create(
            model=GPT, messages=prompt).headers["x-modelgate-cache"] == "miss"
    finally:
        for s in servers:
            s.stop()
