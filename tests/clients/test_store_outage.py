"""The state store goes away: authentication fails closed (503 saying why, for keys not in the
cache), the readiness probe says so, calls by cached keys go on, and their usage records wait
in memory and are all written once PostgreSQL is back. The outage is a TCP proxy in front of
the real PostgreSQL that the test cuts and restores.
"""
import os
import socket
import threading
import time

import pytest
import requests

from conftest import Server, free_port
from test_upstreams import Mock

ADMIN = "mg-test-admin-outage"
MODEL = "anthropic.claude-3-sonnet-20240229-v1:0"
PG = os.environ.get("MODELGATE_TEST_POSTGRES_URL")

pytestmark = pytest.mark.skipif(not PG and not os.environ.get("CI"),
                                reason="needs MODELGATE_TEST_POSTGRES_URL")


class Proxy:
    """Forwards a local port to PostgreSQL until cut."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        self.port = free_port()
        self.conns = []
        self.listener = None
        self.resume()

    def resume(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns = []


def test_store_outage_fails_closed_and_loses_no_usage(tmp_path):
    assert PG, "CI runs this against the real PostgreSQL"
    proxy = Proxy()
    mock = Mock()
    url = PG.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    config = f"""
[local]
enabled = false

[store]
postgres_url = "{url}"

[auth]
admin_key_env = "MG_TEST_ADMIN_KEY"
cache_ttl = "5m"

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
    server = Server(config_text=config, tmp_path=str(tmp_path),
                    env={"MG_TEST_UPSTREAM_KEY": "sk-upstream-test", "MG_TEST_ADMIN_KEY": ADMIN})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    try:
        keys = [requests.post(server.url + "/admin/keys", json={}, headers=admin, timeout=10).json()
                for _ in range(2)]
        used, unused = keys

        def call(k):
            return requests.post(server.url + "/v1/chat/completions", timeout=30,
                                 headers={"Authorization": f"Bearer {k['key']}"},
                                 json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})

        assert call(used).status_code == 200  # now cached
        proxy.cut()

        ready = requests.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["status"] == "store_unavailable"
        refused = call(unused)
        assert refused.status_code == 503, refused.text
        assert "credential store is unavailable" in refused.json()["error"]["message"]
        for _ in range(3):
            assert call(used).status_code == 200

        proxy.resume()
        deadline = time.time() + 30
        while True:
            r = requests.get(f"{server.url}/admin/usage?key={used['id']}&group_by=key",
                             headers=admin, timeout=30)
            rows = r.json().get("rows") if r.status_code == 200 else None
            if rows and rows[0]["requests"] == 4:
                break
            assert time.time() < deadline, (r.status_code, r.text)
            time.sleep(0.5)
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
        assert call(unused).status_code == 200
    finally:
        server.stop()
        mock.stop()
        proxy.cut()
