#!/usr/bin/env python3
"""Gateway benchmark: Modelgate side by side with LiteLLM, Portkey, nginx and the client
straight to the mock upstream, in one run on one machine. Run through `bench/gateways/run.sh`.

Every target proxies OpenAI chat completions to the same mock upstream (the test kit's
`mock-upstream`, release build). The gateway under test runs alone on GATEWAY_CPU; the load
generator (wrk, or `stream-load` for streams) and the mock share CLIENT_CPU. Scenarios:

  latency     concurrency 1, >= 10,000 requests: p50 / p99 / p99.9, added over direct
  throughput  closed-loop sweep of connections; best rate with p99 < 50 ms and no errors
  streaming   100 concurrent streams: time to first token and inter-chunk gap
  memory      RSS idle, and with 1,000 concurrent open streams

Results go to bench/gateways/results.json and, as tables, into bench/README.md between the
`gateways:begin` / `gateways:end` markers.
"""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BENCH_HOME = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache/modelgate-bench"))
# The target directory scripts/lib.sh uses.
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/modelgate-target")) / "release"
MODELGATE = Path(os.environ.get("MODELGATE_BIN", TARGET / "modelgate"))
MOCK = TARGET / "mock-upstream"
STREAM_LOAD = TARGET / "stream-load"
GATEWAY_CPU = os.environ.get("GATEWAY_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")
QUICK = os.environ.get("BENCH_QUICK") == "1"  # short runs, to check the harness itself

MOCK_PORT, GATEWAY_PORT = 18000, 18080
OTLP_PORT = 18318
MODEL = "bench"
KEY = "sk-bench-upstream"
# A ~1 KB answer, the size of a short chat reply.
ANSWER = ("The quick brown fox jumps over the lazy dog. " * 23)[:1000]
REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "Say something."}],
           "max_tokens": 256}
LATENCY_REQUESTS = 2_000 if QUICK else 10_000
SWEEP = [1, 4, 16, 32, 64, 128] if QUICK else [1, 2, 4, 8, 16, 32, 64, 128, 256]
SWEEP_SECONDS = 3 if QUICK else 8
STREAMS, STREAM_PIECES, STREAM_GAP_MS = 100, 20, 20
HOLD_STREAMS = 200 if QUICK else 1000

# Modelgate's policy layers for the "every layer" target: each entry turns one layer on in the
# bare configuration (every layer off), so adding a layer to the scenario is one line here.
# Request timeouts (first token, idle, total) cannot be turned off and run in both targets.
LAYERS = {
    "retries (3 attempts, backoff, retry budget)":
        lambda c: c["resilience"]["retry"].update(max_attempts=3),
    "circuit breaker": lambda c: c["resilience"]["breaker"].update(enabled=True),
    "active health checks (every 30 s)": lambda c: c["resilience"]["health"].update(enabled=True),
    "fallback chain (a second model)": lambda c: (
        c["models"][0].update(fallbacks=["bench-backup"]),
        c["models"].append({"id": "bench-backup", "provider": "mock", "upstream_id": "gpt-b"})),
    "last-good-answer cache (in process)": lambda c: c["models"][0].update(fallback_cache=True),
}

def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


def http_json(url, body=None, headers=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def wait_ready(url, body, headers, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            http_json(url, body, headers, timeout=5)
            return
        except Exception:
            time.sleep(0.25)
    raise RuntimeError(f"not ready after {timeout} s: {url}")


def process_tree(pid):
    """`pid` and all its descendants (Portkey and LiteLLM may fork), as far as they still run."""
    todo = [pid]
    while todo:
        p = todo.pop()
        yield p
        try:
            for t in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (t / "children").read_text().split())
        except FileNotFoundError:
            pass


def rss_kib(pid):
    """Resident set of a process and all its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def spawn(cmd, cpu, log_path, env=None):
    with open(log_path, "w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def pin(pid, cpu):
    """Move every thread of a process and its children to `cpu`."""
    for p in process_tree(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(p)], capture_output=True)


def stop(proc):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Mock:
    def __init__(self, work):
        self.url = f"http://127.0.0.1:{MOCK_PORT}"
        self.proc = spawn([str(MOCK), "--listen", f"127.0.0.1:{MOCK_PORT}", "--threads", "1"],
                          CLIENT_CPU, work / "mock.log")
        for _ in range(100):
            try:
                http_json(self.url + "/_mock/record", {"record": False})
                break
            except Exception:
                time.sleep(0.1)
        self.answer()

    def answer(self, pieces=STREAM_PIECES, gap_ms=0):
        http_json(self.url + "/_mock/default", {
            "blocks": [{"text": ANSWER}], "usage": [12, 250],
            "pieces": max(1, len(ANSWER) // pieces), "chunk_delay_ms": gap_ms})


# --- targets -------------------------------------------------------------------------------

def modelgate_config(layers, observe=None):
    c = {
        "server": {"listen": f"127.0.0.1:{GATEWAY_PORT}"},
        "local": {"enabled": False},
        "resilience": {"retry": {"max_attempts": 1},
                       "breaker": {"enabled": False}, "health": {"enabled": False}},
        "providers": [{"name": "mock", "type": "openai", "base_url": f"http://127.0.0.1:{MOCK_PORT}/v1",
                       "api_key_env": "BENCH_UPSTREAM_KEY"}],
        "models": [{"id": MODEL, "provider": "mock", "upstream_id": "gpt-mock"}],
    }
    for name in layers:
        LAYERS[name](c)
    if observe == "off":
        # Metrics stay (they are always kept); no invocation records, no traces.
        c["invocations"] = {"enabled": False}
    elif observe == "full":
        # Invocation records (the default) and every call's trace exported over OTLP/HTTP.
        c["traces"] = {"endpoint": f"http://127.0.0.1:{OTLP_PORT}", "sample_ratio": 1.0}
    return toml(c)


def toml(doc, prefix=""):
    """Enough TOML for the configuration above: tables, arrays of tables, scalars, lists."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {value(v)}")
    out = "\n".join(lines) + "\n"
    for k, v in tables:
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out += f"\n[{name}]\n" + toml(v, name + ".")
        else:
            for item in v:
                out += f"\n[[{name}]]\n" + toml(item, name + ".")
    return out


def start_modelgate(work, layers, observe=None):
    cfg = work / "modelgate.toml"
    cfg.write_text(modelgate_config(layers, observe))
    if observe == "full":
        start_otlp_sink()
    proc = spawn([str(MODELGATE), "serve", "--config", str(cfg), "--no-pull"], GATEWAY_CPU,
                 work / "modelgate.log", env={"BENCH_UPSTREAM_KEY": KEY, "RUST_LOG": "info"})
    return proc, f"http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions", {}


def start_nginx(work):
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  upstream mock {{ server 127.0.0.1:{MOCK_PORT}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{GATEWAY_PORT};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = spawn([nginx, "-p", str(work), "-c", str(conf), "-e", str(work / "nginx-error.log")],
                 GATEWAY_CPU, work / "nginx.log")
    return proc, f"http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions", {}


def start_litellm(work):
    cfg = work / "litellm.yaml"
    # Not comparable and turned off: retries, cooldowns (LiteLLM's breaker), telemetry, the
    # database, the remote model-cost map fetch.
    cfg.write_text(f"""
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/gpt-mock
      api_base: http://127.0.0.1:{MOCK_PORT}/v1
      api_key: {KEY}
litellm_settings:
  num_retries: 0
  telemetry: false
  request_timeout: 120
router_settings:
  disable_cooldowns: true
  num_retries: 0
""")
    proc = spawn([str(BENCH_HOME / "litellm-venv/bin/litellm"), "--config", str(cfg),
                  "--host", "127.0.0.1", "--port", str(GATEWAY_PORT), "--num_workers", "1",
                  "--telemetry", "False"],
                 GATEWAY_CPU, work / "litellm.log",
                 env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                      "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"})
    return proc, f"http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions", {}


def start_portkey(work):
    pkg = BENCH_HOME / "portkey/node_modules/@portkey-ai/gateway"
    entry = pkg / "build/start-server.js"
    # Headless: no UI, no console animation. Custom hosts on loopback must be trusted.
    proc = spawn(["node", str(entry), f"--port={GATEWAY_PORT}", "--headless"], GATEWAY_CPU,
                 work / "portkey.log",
                 env={"NODE_ENV": "production", "TRUSTED_CUSTOM_HOSTS": "localhost,127.0.0.1"})
    headers = {"x-portkey-provider": "openai",
               "x-portkey-custom-host": f"http://localhost:{MOCK_PORT}/v1",
               "Authorization": f"Bearer {KEY}"}
    return proc, f"http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions", headers


_otlp_sink = None


def start_otlp_sink():
    """An OTLP/HTTP receiver that accepts every export (in this process, on a thread)."""
    global _otlp_sink
    if _otlp_sink:
        return
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    _otlp_sink = http.server.ThreadingHTTPServer(("127.0.0.1", OTLP_PORT), Sink)
    threading.Thread(target=_otlp_sink.serve_forever, daemon=True).start()


def start_direct(_work):
    return None, f"http://127.0.0.1:{MOCK_PORT}/v1/chat/completions", {}


TARGETS = {
    "direct": ("client → mock (baseline)", start_direct),
    "nginx": ("nginx proxy_pass (baseline)", start_nginx),
    "modelgate": ("Modelgate, bare route", lambda w: start_modelgate(w, [])),
    "modelgate-all": ("Modelgate, every policy layer", lambda w: start_modelgate(w, list(LAYERS))),
    "portkey": ("Portkey gateway", start_portkey),
    # Observability on and off (not in the default run: `run.sh modelgate-obs-off
    # modelgate-obs-full`, results in results-observability.json).
    "modelgate-obs-off": ("Modelgate, bare route, metrics only",
                          lambda w: start_modelgate(w, [], observe="off")),
    "modelgate-obs-full": ("Modelgate, bare route, metrics + invocation records + traces",
                           lambda w: start_modelgate(w, [], observe="full")),
    "litellm": ("LiteLLM proxy", start_litellm),
}


# --- load ----------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {{"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def wrk(work, url, headers, connections, seconds):
    script = work / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(
        body=json.dumps(REQUEST),
        headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())))
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"no wrk result: {out}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = r["socket_errors"] + r["status_errors"]
    return r


def latency(work, url, headers):
    probe = wrk(work, url, headers, 1, 2)  # also the warm-up
    seconds = min(180, max(10, int(LATENCY_REQUESTS * 1.2 / max(probe["rps"], 1)) + 1))
    r = wrk(work, url, headers, 1, seconds)
    if r["requests"] < LATENCY_REQUESTS:
        r = wrk(work, url, headers, 1, min(300, int(seconds * LATENCY_REQUESTS * 1.3 / max(r["requests"], 1)) + 1))
    return r


def throughput(work, url, headers):
    steps, best = [], None
    for c in SWEEP:
        # The better of two runs per step: this shared machine has bursts of noise that can
        # halve one 8 s run; every target gets the same treatment.
        r = max((wrk(work, url, headers, c, SWEEP_SECONDS) for _ in range(2)),
                key=lambda x: (x["errors"] == 0 and x["p99"] < 50_000, x["rps"]))
        steps.append({"connections": c, "rps": round(r["rps"]), "p99_us": r["p99"],
                      "errors": r["errors"]})
        ok = r["p99"] < 50_000 and r["errors"] == 0
        if ok and (best is None or r["rps"] > best["rps"]):
            best = steps[-1]
        if not ok:
            break
    return {"best": best, "steps": steps}


def stream_load(url, headers, streams, rounds, on_open=None):
    cmd = ["taskset", "-c", CLIENT_CPU, str(STREAM_LOAD), "--url", url, "--model", MODEL,
           "--streams", str(streams), "--rounds", str(rounds)]
    for k, v in headers.items():
        cmd += ["--header", f"{k}: {v}"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sample = None
    for line in p.stderr:
        if line.startswith("open ") and on_open:
            sample = on_open()
    out = p.stdout.read()
    p.wait()
    return json.loads(out), sample


# --- run -----------------------------------------------------------------------------------

DIRECT_URL = f"http://127.0.0.1:{MOCK_PORT}/v1/chat/completions"


def baseline(work, mock):
    """The direct figures, measured again right before each target: the machine drifts, and
    a pair measured back to back compares fairly where a baseline from minutes ago may not."""
    mock.answer(gap_ms=0)
    lat = latency(work, DIRECT_URL, {})
    mock.answer(gap_ms=STREAM_GAP_MS)
    streaming, _ = stream_load(DIRECT_URL, {}, STREAMS, 3)
    return {"latency": lat, "latency_one_core": lat, "streaming": streaming}


def run_target(name, mock, results):
    label, start = TARGETS[name]
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    r = {"label": label}
    proc = None
    try:
        if name != "direct":
            log(name, "paired direct baseline")
            r["baseline"] = baseline(work, mock)
        proc, url, headers = start(work)
        mock.answer(gap_ms=0)
        if proc:
            wait_ready(url, REQUEST, headers, proc)
            time.sleep(1)
            r["rss_idle_kib"] = rss_kib(proc.pid)
        log(name, "latency")
        r["latency"] = latency(work, url, headers)
        if proc:
            # The same on one core: no cross-core wake-ups, so what is left is CPU work.
            log(name, "latency on one core")
            pin(proc.pid, CLIENT_CPU)
            r["latency_one_core"] = latency(work, url, headers)
            pin(proc.pid, GATEWAY_CPU)
        else:
            r["latency_one_core"] = r["latency"]
        log(name, "throughput")
        r["throughput"] = throughput(work, url, headers)
        log(name, "streaming")
        mock.answer(gap_ms=STREAM_GAP_MS)
        r["streaming"], _ = stream_load(url, headers, STREAMS, 3)
        if proc:
            log(name, f"memory with {HOLD_STREAMS} open streams")
            mock.answer(pieces=20, gap_ms=500)
            r["hold"], r["rss_streams_kib"] = stream_load(
                url, headers, HOLD_STREAMS, 1, on_open=lambda: rss_kib(proc.pid))
    except Exception as e:  # a peer that cannot run is reported, not fatal
        log(name, "failed:", e)
        r["error"] = str(e)
    finally:
        stop(proc)
        r["log_tail"] = "" if "error" not in r else tail(work)
    results[name] = r


def tail(work):
    logs = sorted(work.glob("*.log"))
    return "\n".join(f"{p.name}: {p.read_text()[-600:]}" for p in logs)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "unknown")
    versions = {}
    for name, cmd in {"nginx": ["nginx", "-v"], "wrk": ["wrk", "-v"], "node": ["node", "-v"]}.items():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            versions[name] = (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:
            versions[name] = "missing"
    return {"cpu": cpu, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "gateway_cpu": GATEWAY_CPU, "client_cpu": CLIENT_CPU, "versions": versions,
            "litellm": os.environ.get("LITELLM_VERSION", "1.98.0"),
            "portkey": os.environ.get("PORTKEY_VERSION", "1.15.2"), "quick": QUICK,
            "layers": list(LAYERS)}


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    names = sys.argv[1:] or [t for t in TARGETS if not t.startswith("modelgate-obs-")]
    for binary in (MODELGATE, MOCK, STREAM_LOAD):
        if not binary.exists():
            sys.exit(f"bench: {binary} is missing; run bench/gateways/run.sh, which builds it")
    work = Path(tempfile.mkdtemp(prefix="bench-mock-"))
    mock = Mock(work)
    results = {}
    try:
        for name in names:
            run_target(name, mock, results)
    finally:
        stop(mock.proc)
    out = {"machine": machine(), "results": results}
    observability = all(n.startswith("modelgate-obs-") for n in names)
    path = HERE / ("results-quick.json" if QUICK else
                   "results-observability.json" if observability else "results.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    log("wrote", path)
    if not QUICK and names == [t for t in TARGETS if not t.startswith("modelgate-obs-")]:
        import report
        report.update_readme(out, REPO / "bench/README.md")
        log("updated bench/README.md")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
