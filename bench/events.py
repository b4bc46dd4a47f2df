#!/usr/bin/env python3
"""Event bus, end to end: from PutEvents to the target receiving the event.

One gateway with a rule whose target is a webhook on loopback (so the figure is the bus, the
job queue and the signed delivery, not a model). Measured:

  latency      one event at a time: PutEvents sent → webhook body received (p50 / p90 / p99)
  throughput   N events put in batches of 10 from 4 threads → all N received

Run: `MODELGATE_BIN=target/release/modelgate python3 bench/events.py` (any build; the README
names the one used). Needs `requests`. The gateway's state goes to a temporary directory.
"""
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

SEQUENTIAL = int(os.environ.get("EVENTS", "300"))
BULK = int(os.environ.get("BULK", "2000"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self):
        self.seen = {}
        self.cv = threading.Condition()
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                now = time.perf_counter()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                with me.cv:
                    me.seen[body["id"]] = now
                    me.cv.notify_all()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, ids, timeout=120):
        deadline = time.time() + timeout
        with self.cv:
            while not all(i in self.seen for i in ids):
                if not self.cv.wait(timeout=max(0.0, deadline - time.time())):
                    raise SystemExit(f"{sum(i in self.seen for i in ids)} of {len(ids)} delivered")


def call(base, op, body):
    r = requests.post(base + "/", data=json.dumps(body), timeout=30, headers={
        "x-amz-target": f"AWSEvents.{op}", "content-type": "application/x-amz-json-1.1"})
    r.raise_for_status()
    return r.json()


def put(base, n):
    entries = [{"Source": "bench", "DetailType": "Tick", "Detail": json.dumps({"n": i})} for i in range(n)]
    out = call(base, "PutEvents", {"Entries": entries})
    assert out["FailedEntryCount"] == 0, out
    return [e["EventId"] for e in out["Entries"]]


def main():
    binary = os.environ.get("MODELGATE_BIN", "target/release/modelgate")
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    port = free_port()
    receiver = Receiver()
    cfg = work / "modelgate.toml"
    cfg.write_text(f"""
[server]
listen = "127.0.0.1:{port}"

[store]
sqlite_path = "{work}/state.db"

[jobs]
webhook_secret_env = "BENCH_WEBHOOK_SECRET"
webhook_allow = ["127.0.0.1/32"]
""")
    log = open(work / "modelgate.log", "w")
    proc = subprocess.Popen([binary, "serve", "--config", str(cfg), "--no-pull"], stdout=log, stderr=log,
                            env={**os.environ, "BENCH_WEBHOOK_SECRET": "bench", "RUST_LOG": "warn"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if requests.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("the gateway did not become ready; see " + str(work / "modelgate.log"))
            time.sleep(0.2)
        call(base, "PutRule", {"Name": "ticks", "EventPattern": json.dumps({"source": ["bench"]})})
        call(base, "PutTargets", {"Rule": "ticks", "Targets": [{
            "Id": "hook", "Arn": receiver.url,
            "InputTransformer": {"InputPathsMap": {"id": "$.id"}, "InputTemplate": '{"id": <id>}'}}]})
        for _ in range(20):  # warm-up
            receiver.wait(put(base, 1))
        lat = []
        for _ in range(SEQUENTIAL):
            t0 = time.perf_counter()
            [eid] = put(base, 1)
            receiver.wait([eid])
            lat.append((receiver.seen[eid] - t0) * 1000)
        q = statistics.quantiles(lat, n=100)
        print(f"latency, {SEQUENTIAL} events one at a time: p50 {q[49]:.1f} ms, p90 {q[89]:.1f} ms, "
              f"p99 {q[98]:.1f} ms, max {max(lat):.1f} ms")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            ids = [i for batch in pool.map(lambda _: put(base, 10), range(BULK // 10)) for i in batch]
        put_s = time.perf_counter() - t0
        receiver.wait(ids)
        total = max(receiver.seen[i] for i in ids) - t0
        print(f"throughput, {len(ids)} events in batches of 10 from 4 threads: put in {put_s:.2f} s "
              f"({len(ids) / put_s:.0f}/s accepted), all delivered after {total:.2f} s ({len(ids) / total:.0f}/s)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        receiver.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
