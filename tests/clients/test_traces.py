"""OpenTelemetry traces: real OTLP receivers started by the test (HTTP/protobuf with the
`opentelemetry-proto` messages, gRPC with `grpcio`) get the span tree of each call with the
GenAI attributes; a client's `traceparent` is continued, and the mock upstream receives a
`traceparent` of the same trace whose parent is the attempt's span. No prompt text in spans.
"""
import concurrent.futures
import time

import grpc
import openai
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import PostReceiver, Server
from test_upstreams import Mock

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
PROMPT_SECRET = "walrus-saxophone-5521"
UPSTREAM_KEY = "sk-upstream-trace-secret-77"


def flatten(request):
    """Spans of an ExportTraceServiceRequest as dicts."""
    out = []
    for rs in request.resource_spans:
        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                attrs = {}
                for a in s.attributes:
                    v = a.value
                    kind = v.WhichOneof("value")
                    attrs[a.key] = ([x.string_value for x in v.array_value.values]
                                    if kind == "array_value" else getattr(v, kind))
                out.append({
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                    "parent": s.parent_span_id.hex(), "name": s.name, "kind": s.kind,
                    "attrs": attrs, "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano, "status": s.status.code,
                    "service": resource.get("service.name"), "raw": str(s),
                })
    return out


class HttpReceiver(PostReceiver):
    """An OTLP/HTTP receiver: the spans of every export it got."""

    def __init__(self):
        super().__init__(content_type="application/x-protobuf")

    @property
    def spans(self):
        out = []
        for body in list(self.bodies):
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            out += flatten(req)
        return out


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = []
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.url = f"http://127.0.0.1:{port}"

    def Export(self, request, context):
        self.spans += flatten(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def stop(self):
        self.server.stop(0)


def wait_for(receiver, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [s for s in receiver.spans if predicate(s)]
        if found:
            return found
        time.sleep(0.05)
    return []


@pytest.fixture(scope="module")
def mock():
    m = Mock()
    yield m
    m.stop()


def gateway(mock, tmp_path_factory, traces):
    return Server(config_text=f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 2
initial_backoff = "1ms"
max_backoff = "2ms"

[resilience.breaker]
enabled = false

[[providers]]
name = "up"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "traced"
provider = "up"
upstream_id = "gpt-4o-mini"

[traces]
{traces}
""", tmp_path=str(tmp_path_factory.mktemp("traces")), env={"MG_TEST_UPSTREAM_KEY": UPSTREAM_KEY})


@pytest.fixture(autouse=True)
def clean(mock):
    mock.reset()


def test_http_export_continues_the_client_trace_and_reaches_the_upstream(mock, tmp_path_factory):
    receiver = HttpReceiver()
    gw = gateway(mock, tmp_path_factory, f'endpoint = "{receiver.url}"')
    try:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        # A throttle first: two attempts, the first failed.
        mock.push({"status": 429, "message": "slow down"})
        raw = client.chat.completions.with_raw_response.create(
            model="traced", max_tokens=20, temperature=0.2,
            messages=[{"role": "user", "content": f"remember {PROMPT_SECRET}"}],
            extra_headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
        request_id = raw.headers["x-request-id"]

        roots = wait_for(receiver, lambda s: s["trace_id"] == TRACE and s["kind"] == 2)
        assert len(roots) == 1
        root = roots[0]
        assert root["parent"] == PARENT, "the client's span is the parent"
        assert root["name"] == "chat traced" and root["service"] == "modelgate"
        a = root["attrs"]
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.system"] == "openai"
        assert a["gen_ai.request.model"] == "traced" and a["gen_ai.response.model"] == "traced"
        assert a["gen_ai.request.max_tokens"] == 20
        assert abs(a["gen_ai.request.temperature"] - 0.2) < 1e-6
        assert a["gen_ai.usage.input_tokens"] == 10 and a["gen_ai.usage.output_tokens"] == 5
        assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
        assert a["http.response.status_code"] == 200 and a["modelgate.request_id"] == request_id
        assert a["modelgate.attempts"] == 2 and a["modelgate.request.messages"] == 1

        # The tree: preprocess, policy, two upstream attempts, postprocess — all children of
        # the root, inside its time.
        children = wait_for(receiver, lambda s: s["parent"] == root["span_id"])
        deadline = time.monotonic() + 5
        while len(children) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
            children = [s for s in receiver.spans if s["parent"] == root["span_id"]]
        names = sorted(s["name"] for s in children)
        assert names == ["policy", "postprocess", "preprocess", "upstream traced",
                         "upstream traced"], names
        for c in children:
            assert c["trace_id"] == TRACE
            assert root["start"] <= c["start"] <= c["end"] <= root["end"]
        upstream = sorted((s for s in children if s["name"] == "upstream traced"),
                          key=lambda s: s["start"])
        assert [s["kind"] for s in upstream] == [3, 3]  # CLIENT
        assert upstream[0]["status"] == 2 and upstream[0]["attrs"]["http.response.status_code"] == 429
        assert upstream[1]["status"] != 2

        # The mock got a traceparent of the same trace, naming each attempt's span.
        sent = [r["headers"].get("traceparent") for r in mock.requests()
                if r["path"].endswith("/chat/completions")]
        assert sent == [f"00-{TRACE}-{s['span_id']}-01" for s in upstream]

        # A stream: its last span is `stream`; no prompt text anywhere in the spans.
        stream = client.chat.completions.create(
            model="traced", stream=True, messages=[{"role": "user", "content": PROMPT_SECRET}])
        for _ in stream:
            pass
        assert wait_for(receiver, lambda s: s["name"] == "stream")
        for secret in (PROMPT_SECRET, UPSTREAM_KEY):
            assert all(secret not in s["raw"] for s in receiver.spans), secret
            assert secret not in gw.logs(), secret
        # A call without a traceparent starts its own trace, exported all the same.
        r = requests.post(gw.url + "/v1/chat/completions", timeout=10, json={
            "model": "traced", "messages": [{"role": "user", "content": "hi"}]})
        rid = r.headers["x-request-id"]
        own = wait_for(receiver, lambda s: s["attrs"].get("modelgate.request_id") == rid)
        assert own and own[0]["trace_id"] != TRACE and own[0]["parent"] == ""
    finally:
        gw.stop()
        receiver.stop()


def test_grpc_export_and_sampling(mock, tmp_path_factory):
    receiver = GrpcReceiver()
    gw = gateway(mock, tmp_path_factory,
                 f'endpoint = "{receiver.url}"\nprotocol = "grpc"\nsample_ratio = 0.0')
    try:
        def ask(traceparent=None):
            headers = {"traceparent": traceparent} if traceparent else {}
            r = requests.post(gw.url + "/v1/chat/completions", headers=headers, timeout=10,
                              json={"model": "traced",
                                    "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            return r.headers["x-request-id"]

        unsampled_new = ask()
        unsampled_client = ask(f"00-{'1' * 32}-{PARENT}-00")
        sampled_client = ask(f"00-{TRACE}-{PARENT}-01")
        got = wait_for(receiver, lambda s: s["attrs"].get("modelgate.request_id") == sampled_client)
        assert got and got[0]["trace_id"] == TRACE and got[0]["service"] == "modelgate"
        time.sleep(1.0)  # a batch is sent at least every 500 ms
        ids = {s["attrs"].get("modelgate.request_id") for s in receiver.spans}
        assert unsampled_new not in ids, "sample_ratio 0: new traces are not exported"
        assert unsampled_client not in ids, "the client's 'not sampled' is kept"
        # Unsampled calls still propagate the trace upstream, flagged as not sampled.
        sent = [r["headers"]["traceparent"] for r in mock.requests()
                if r["path"].endswith("/chat/completions")]
        assert sent[1].startswith(f"00-{'1' * 32}-") and sent[1].endswith("-00")
    finally:
        gw.stop()
        receiver.stop()
