"""Two Modelgate processes sharing PostgreSQL (keys, usage, audit) and Redis (counters) behave
as one gateway: a key made on one works on the other, one rate limit holds across both, and
one hard budget stops both. Needs the real servers (MODELGATE_TEST_POSTGRES_URL and
MODELGATE_TEST_REDIS_URL, set by scripts/test.sh when they run).
"""
import concurrent.futures
import os
import threading
import time
import uuid

import pytest
import requests

from conftest import Server
from test_upstreams import Mock

ADMIN = "mg-test-admin-replicas"
MODEL = "anthropic.claude-3-sonnet-20240229-v1:0"
PG = os.environ.get("MODELGATE_TEST_POSTGRES_URL")
REDIS = os.environ.get("MODELGATE_TEST_REDIS_URL")

pytestmark = pytest.mark.skipif(
    not (PG and REDIS) and not os.environ.get("CI"),
    reason="needs MODELGATE_TEST_POSTGRES_URL and MODELGATE_TEST_REDIS_URL",
)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    assert PG and REDIS, "CI runs this against the real PostgreSQL and Redis"
    mock = Mock()
    prefix = f"mgtest-{uuid.uuid4().hex[:8]}:"
    config = f"""
[local]
enabled = false

[store]
postgres_url = "{PG}"
redis_url = "{REDIS}"
redis_prefix = "{prefix}"

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"
secret_env = "MG_TEST_SERVER_SECRET"

[resilience.retry]
max_attempts = 1

[[providers]]
name = "mock-openai"
type = "openai"
base_url = "{mock.url}/v1"
api_key_env = "MG_TEST_UPSTREAM_KEY"

[[models]]
id = "{MODEL}"
provider = "mock-openai"
upstream_id = "gpt-4o-mini"

# The mock answers 10 input tokens: $0.001 a call.
[prices."{MODEL}"]
input = 100.0
output = 0.0
"""
    env = {"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "MG_TEST_ADMIN_KEY": ADMIN,
           "MG_TEST_SERVER_SECRET": "replicas-share-this-secret-" + prefix}
    servers = [Server(config_text=config, tmp_path=str(tmp_path_factory.mktemp(f"replica{i}")), env=env)
               for i in range(2)]
    yield servers
    for s in servers:
        s.stop()
    mock.stop()


def new_key(server, **settings):
    r = requests.post(server.url + "/admin/keys", json=settings, timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201, r.text
    return r.json()


def call(server, key):
    return requests.post(server.url + "/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {key}"},
                         json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def test_a_key_made_on_one_replica_works_on_the_other(replicas):
    a, b = replicas
    k = new_key(a)
    assert call(b, k["key"]).status_code == 200
    requests.post(f"{b.url}/admin/keys/{k['id']}/revoke", headers={"Authorization": f"Bearer {ADMIN}"},
                  timeout=10).raise_for_status()
    # Replica a learns of the revocation within its key cache time (10 s by default).
    deadline = time.time() + 15
    while call(a, k["key"]).status_code != 401:
        assert time.time() < deadline, "the revocation never reached the other replica"
        time.sleep(0.5)


def test_one_rate_limit_across_two_replicas(replicas):
    rps, burst, seconds = 20, 20, 10.0
    k = new_key(replicas[0], limits={"rps": rps, "burst": burst})
    admitted = []
    attempts = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def hammer(i):
        server = replicas[i % 2]
        session = requests.Session()
        while time.monotonic() < stop:
            r = session.post(server.url + "/v1/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {k['key']}"},
                             json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
            with lock:
                attempts.append(r.status_code)
                if r.status_code == 200:
                    admitted.append(i % 2)
            assert r.status_code in (200, 429), r.text

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(hammer, range(16)))
    want = burst + rps * seconds
    got = len(admitted)
    print(f"admitted {got} of {len(attempts)} attempts in {seconds}s; limit allows {want}")
    assert len(attempts) > 2 * want, "the clients did not push past the limit"
    assert abs(got - want) / want <= 0.05, (got, want)
    # Both replicas admitted calls: the limit is shared, not split.
    assert admitted.count(0) > 0 and admitted.count(1) > 0


def test_one_hard_budget_across_two_replicas_under_50_clients(replicas):
    per_call = 0.001
    limit = 0.02
    k = new_key(replicas[0], budgets=[{"name": "replica-budget", "limit_usd": limit, "period": "day"}])
    stop = threading.Event()

    def client(i):
        server = replicas[i % 2]
        session = requests.Session()
        while not stop.is_set():
            r = session.post(server.url + "/v1/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {k['key']}"},
                             json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
            if r.status_code == 429:
                assert "replica-budget" in r.json()["error"]["message"]
                return
            assert r.status_code == 200, r.text

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(client, i) for i in range(50)]
        done, _ = concurrent.futures.wait(futures, timeout=60)
        stop.set()
        for f in futures:
            f.result()
    # Every call's cost is in the usage records (written in batches): read the total.
    deadline = time.time() + 10
    while True:
        usage = requests.get(f"{replicas[1].url}/admin/usage?key={k['id']}&group_by=key", timeout=10,
                             headers={"Authorization": f"Bearer {ADMIN}"}).json()
        rows = usage["rows"]
        spent = rows[0]["cost_usd"] if rows else 0.0
        time.sleep(0.5)
        again = requests.get(f"{replicas[1].url}/admin/usage?key={k['id']}&group_by=key", timeout=10,
                             headers={"Authorization": f"Bearer {ADMIN}"}).json()["rows"]
        if again and again[0]["cost_usd"] == spent:
            break
        assert time.time() < deadline
    print(f"spent ${spent:.4f} of a ${limit} budget with 50 clients on two replicas")
    assert spent >= limit - 1e-9
    # Overshoot: at most the calls in flight when it ran out (one per client).
    assert spent <= limit + 50 * per_call + 1e-9, spent


def test_a_routing_change_on_one_replica_applies_on_the_other(replicas):
    a, b = replicas
    auth = {"Authorization": f"Bearer {ADMIN}"}
    name = f"vm-{uuid.uuid4().hex[:8]}"
    doc = {"routers": [{"name": name, "targets": [{"model": MODEL}]}], "note": "from replica a"}
    r = requests.put(a.url + "/admin/routing", json=doc, headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    deadline = time.time() + 10
    while time.time() < deadline:
        status = requests.get(b.url + "/admin/routing", headers=auth, timeout=10).json()
        if status["version"] == version:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"replica b never applied version {version}: {status}")
    r = requests.post(b.url + "/v1/chat/completions", headers=auth, timeout=10,
                      json={"model": name, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert f"router={name}" in r.headers["x-modelgate-route"]
    assert f"version={version}" in r.headers["x-modelgate-route"]
    versions = requests.get(b.url + "/admin/routing/versions", headers=auth, timeout=10).json()
    assert versions["data"][0]["note"] == "from replica a"
