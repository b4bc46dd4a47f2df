"""A real Prometheus server (Debian's `prometheus`) scrapes Modelgate during a scripted
workload against the mock upstream; PromQL answers the same numbers as `/metrics` and as
the clients saw.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest
import requests

from conftest import Server, free_port
from test_upstreams import Mock

MODEL = "anthropic.claude-3-sonnet-20240229-v1:0"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"

pytestmark = pytest.mark.skipif(not PROMETHEUS and not os.environ.get("CI"),
                                reason="needs the prometheus binary (Debian package prometheus)")


def query_all(url, promql):
    r = requests.get(url + "/api/v1/query", params={"query": promql}, timeout=10).json()
    assert r["status"] == "success", (promql, r)
    return r["data"]["result"]


def query(url, promql):
    result = query_all(url, promql)
    return float(result[0]["value"][1]) if result else None


def test_the_alerting_rules_pass_their_unit_tests():
    assert PROMTOOL, "CI installs prometheus (with promtool)"
    rules = DEPLOY / "prometheus"
    for args in (["check", "rules", "modelgate-alerts.yml"], ["test", "rules", "modelgate-alerts.test.yml"]):
        r = subprocess.run([PROMTOOL, *args], cwd=rules, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrapes_the_same_numbers(tmp_path):
    assert PROMETHEUS, "CI installs prometheus"
    mock = Mock()
    config = f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 2
initial_backoff = "1ms"
max_backoff = "2ms"

[resilience.breaker]
enabled = false

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "{MODEL}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

[[models]]
id = "flaky"
provider = "mock-openai"
upstream_id = "gpt-4o"
fallbacks = ["{MODEL}"]
"""
    server = Server(config_text=config, tmp_path=str(tmp_path), env={"MG_TEST_UPSTREAM_KEY": "x"})
    prom_port = free_port()
    target = server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: modelgate
    static_configs:
      - targets: ["{target}"]
""")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prom_url = f"http://127.0.0.1:{prom_port}"
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        statuses = []
        for _ in range(7):
            statuses.append(requests.post(server.url + "/v1/chat/completions", json=body, timeout=10).status_code)
        for _ in range(2):  # both attempts fail
            mock.push({"status": 500, "message": "boom"}, {"status": 500, "message": "boom"})
            statuses.append(requests.post(server.url + "/v1/chat/completions", json=body, timeout=10).status_code)
        statuses.append(requests.post(server.url + "/v1/chat/completions", timeout=10,
                                      json={**body, "model": "no-such-model"}).status_code)
        mock.push({"status": 429, "message": "slow down"})  # retried, then answered
        statuses.append(requests.post(server.url + "/v1/chat/completions", json=body, timeout=10).status_code)
        mock.push({"status": 500, "message": "boom"}, {"status": 500, "message": "boom"})  # falls back
        statuses.append(requests.post(server.url + "/v1/chat/completions", timeout=10,
                                      json={**body, "model": "flaky"}).status_code)
        assert sorted(statuses) == [200] * 9 + [404] + [500] * 2, statuses

        chat = 'route="/v1/chat/completions"'
        deadline = time.time() + 60
        while True:
            try:
                total = query(prom_url, f"sum(modelgate_requests_total{{{chat}}})")
            except requests.RequestException:
                total = None
            if total == 12:
                break
            assert time.time() < deadline, f"Prometheus never saw the 12 calls (last: {total})"
            time.sleep(0.5)
        assert query(prom_url, f'sum(modelgate_requests_total{{{chat},status="200"}})') == 9
        assert query(prom_url, f'sum(modelgate_requests_total{{{chat},status="500"}})') == 2
        assert query(prom_url, 'sum(modelgate_errors_total{category="upstream"})') == 2
        assert query(prom_url, 'sum(modelgate_errors_total{category="not_found"})') == 1
        # 7 + 2 × 2 + 2 + 3 attempts, as the mock counted.
        assert query(prom_url, "sum(modelgate_upstream_attempts_total)") == mock.calls() == 16
        assert query(prom_url, "sum(modelgate_retries_total)") == 5
        assert query(prom_url, 'sum(modelgate_fallbacks_total{model="flaky"})') == 1
        # The default mock answer is 10 input tokens; nine answers.
        assert query(prom_url, 'sum(modelgate_tokens_total{kind="input"})') == 90
        # Every dashboard query runs, names only metrics the gateway exports, and the main
        # panels have data.
        dashboard = json.loads((DEPLOY / "grafana" / "modelgate-dashboard.json").read_text())
        exported = requests.get(server.url + "/metrics", timeout=10).text
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
                # (The embedded-model gauges exist only with local models on, which this
                # server turns off; crates/server/tests/metrics.rs checks them.)
                for name in re.findall(r"modelgate_(?!local_)[a-z_]+", expr):
                    family = re.sub(r"_(total|bucket|count|sum)$", "", name)
                    assert f"# TYPE {family} " in exported, (panel["title"], name)
                result = query_all(prom_url, expr)
                if panel["title"] in ("Requests per second by status", "Errors by category",
                                      "Latency percentiles (whole call)"):
                    # A rate needs two scrapes of a series: wait for the second.
                    deadline = time.time() + 30
                    while not result and time.time() < deadline:
                        time.sleep(0.5)
                        result = query_all(prom_url, expr)
                    assert result, (panel["title"], expr)
        # A latency percentile works over the histogram.
        p99 = query(prom_url, "histogram_quantile(0.99, sum by (le) (modelgate_request_duration_seconds_bucket))")
        assert p99 is not None and 0 < p99 <= 120
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        server.stop()
        mock.stop()
