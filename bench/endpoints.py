#!/usr/bin/env python3
"""What a declarative endpoint costs over the model call it makes.

One release gateway (pinned to GATEWAY_CPU) in front of the test kit's mock upstream, with a
`/generate` endpoint (request JSON Schema, field mapping, inline template, use-case model
choice) on the same model. wrk (on CLIENT_CPU, with the mock) measures, in alternating rounds:

  chat      POST /v1/chat/completions  {"model": "bench", "messages": [...]}
  endpoint  POST /generate             {"prompt": "...", "use_case": "general"}

both answered by the mock's ~1 KB reply: latency at one connection, and requests per second
at eight. Run: `bench/endpoints.sh` (builds the release binaries first).
"""
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gateways"))
import harness as h  # noqa: E402

ROUNDS = 3
SECONDS = 8

ENDPOINT = """
[[endpoints]]
name = "generate"
path = "/generate"
request_schema = { type = "object", required = ["prompt"], additionalProperties = false, properties = { prompt = { type = "string", minLength = 1, maxLength = 20000 }, use_case = { type = "string", default = "general" } } }
variables = { question = "prompt" }
template = { system = "You are a helpful assistant.", user = "{{ question }}", max_tokens = 256 }
model = "bench"
model_field = "use_case"
use_case_models = { general = "bench", other = "bench" }
"""


def run(work, url, body, connections):
    h.REQUEST = body
    return h.wrk(work, url, {}, connections, SECONDS)


def main():
    work = Path(tempfile.mkdtemp(prefix="bench-endpoints-"))
    mock = h.Mock(work)
    cfg = work / "modelgate.toml"
    cfg.write_text(h.modelgate_config([]) + ENDPOINT)
    proc = h.spawn([str(h.MODELGATE), "serve", "--config", str(cfg), "--no-pull"], h.GATEWAY_CPU,
                   work / "modelgate.log", env={"BENCH_UPSTREAM_KEY": h.KEY, "RUST_LOG": "warn"})
    base = f"http://127.0.0.1:{h.GATEWAY_PORT}"
    cases = {
        "chat": (base + "/v1/chat/completions", dict(h.REQUEST)),
        "endpoint": (base + "/generate", {"prompt": "Say something.", "use_case": "general"}),
    }
    results = {name: [] for name in cases}
    try:
        h.wait_ready(cases["chat"][0], cases["chat"][1], {}, proc)
        for name, (url, body) in cases.items():  # warm-up
            run(work, url, body, 1)
        for _ in range(ROUNDS):
            for name, (url, body) in cases.items():
                lat = run(work, url, body, 1)
                tput = run(work, url, body, 8)
                results[name].append({"p50_us": lat["p50"], "p99_us": lat["p99"],
                                      "rps_8": round(tput["rps"]),
                                      "errors": lat["errors"] + tput["errors"]})
                h.log(name, results[name][-1])
    finally:
        h.stop(proc)
        h.stop(mock.proc)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": h.machine(), "rounds": results}
    (Path(__file__).resolve().parent / "results-endpoints.json").write_text(
        json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
