"""A real Prometheus server (Debian's `prometheus`) scrapes Modelgate during a scripted
workload against the mock upstream; PromQL answers the same numbers as `/metrics` and as
the clients saw.
"""
import os
import shutil
import subprocess
import time

import pytest
import requests

from conftest import Server, free_port
from test_upstreams import Mock

MODEL = "anthropic.claude-3-sonnet-20240229-v1:0"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(not PROMETHEUS and not os.environ.get("CI"),
                                reason="needs the prometheus binary (Debian package prometheus)")


def query(url, promql):
    r = requests.get(url + "/api/v1/query", params={"query": promql}, timeout=10).json()
    assert r["status"] == "success", r
    result = r["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_same_numbers(tmp_path):
    assert PROMETHEUS, "CI installs prometheus"
    mock = Mock()
    config = f"""
[local]
enabled = false

[resilience.retry]
max_attempts = 1

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
        for _ in range(2):
            mock.push({"status": 500, "message": "boom"})
            statuses.append(requests.post(server.url + "/v1/chat/completions", json=body, timeout=10).status_code)
        statuses.append(requests.post(server.url + "/v1/chat/completions", timeout=10,
                                      json={**body, "model": "no-such-model"}).status_code)
        assert sorted(statuses) == [200] * 7 + [404] + [500] * 2, statuses

        chat = 'route="/v1/chat/completions"'
        deadline = time.time() + 60
        while True:
            try:
                total = query(prom_url, f"sum(modelgate_requests_total{{{chat}}})")
            except requests.RequestException:
                total = None
            if total == 10:
                break
            assert time.time() < deadline, f"Prometheus never saw the 10 calls (last: {total})"
            time.sleep(0.5)
        assert query(prom_url, f'sum(modelgate_requests_total{{{chat},status="200"}})') == 7
        assert query(prom_url, f'sum(modelgate_requests_total{{{chat},status="500"}})') == 2
        assert query(prom_url, 'sum(modelgate_errors_total{category="upstream"})') == 2
        assert query(prom_url, 'sum(modelgate_errors_total{category="not_found"})') == 1
        assert query(prom_url, f'sum(modelgate_upstream_attempts_total{{model="{MODEL}"}})') == mock.calls()
        # The default mock answer is 10 input tokens.
        assert query(prom_url, 'sum(modelgate_tokens_total{kind="input"})') == 70
        # A latency percentile works over the histogram.
        p99 = query(prom_url, "histogram_quantile(0.99, sum by (le) (modelgate_request_duration_seconds_bucket))")
        assert p99 is not None and 0 < p99 <= 120
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        server.stop()
        mock.stop()
