"""Server behaviour seen from outside: graceful shutdown, config errors, request size limit."""
import os
import signal
import subprocess
import threading
import time

import requests

from conftest import Server, binary

CHAT = "local.smollm2-135m-instruct"


def test_sigterm_lets_inflight_stream_finish(tmp_path):
    server = Server(tmp_path=str(tmp_path))
    body = {"model": CHAT, "stream": True, "temperature": 0, "max_tokens": 120,
            "messages": [{"role": "user", "content": "Tell me a story about a brave knight."}]}
    frames = []
    with requests.post(server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        lines = r.iter_lines()
        # Wait until generation is under way, then ask the server to stop.
        for line in lines:
            if line:
                frames.append(line.decode())
            if len(frames) >= 3:
                break
        server.proc.send_signal(signal.SIGTERM)
        for line in lines:
            if line:
                frames.append(line.decode())
    assert frames[-1] == "data: [DONE]", frames[-3:]
    assert server.proc.wait(timeout=30) == 0
    # It no longer accepts connections.
    try:
        requests.get(server.url + "/healthz", timeout=2)
        raise AssertionError("server still accepting after shutdown")
    except requests.ConnectionError:
        pass
    server.log.close()


def test_bad_config_is_one_clear_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nlisten = \"127.0.0.1:0\"\nmax_body = 5\n")
    out = subprocess.run([binary(), "serve", "--config", str(path), "--no-pull"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert str(path) in out.stderr
    assert "max_body" in out.stderr
    assert "unknown field" in out.stderr


def test_logs_do_not_contain_prompts(start_server):
    server = start_server()
    secret = "zebra-umbrella-4471"
    r = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": CHAT, "max_tokens": 4,
        "messages": [{"role": "user", "content": f"Remember the code {secret}"}]})
    assert r.status_code == 200
    time.sleep(0.2)
    logs = server.logs()
    assert "/v1/chat/completions" in logs
    assert secret not in logs
