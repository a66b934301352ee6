"""The tiny model's HTTP server, as a real process on 127.0.0.1, always stopped afterwards."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from scalesim_course import loadtest, tinymodel
from scalesim_course.serve import ServerProcess, parse_completion_request, RequestError


@pytest.fixture(scope="module")
def server():
    """A server with room for a few hundred requests; stopped even if a test fails."""
    proc = ServerProcess(max_batch=8, max_queue=512, idle_timeout=120)
    try:
        yield proc.start()
    finally:
        code = proc.stop()
    assert code == 0, f"the server should exit cleanly on SIGTERM, got exit code {code}"


@pytest.fixture(scope="module")
def small_server():
    """Two slots and two queue places: easy to fill."""
    proc = ServerProcess(max_batch=2, max_queue=2, idle_timeout=120)
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def model():
    return tinymodel.TinyTransformer(tinymodel.TinyConfig(seed=0))


def post(url, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + "/v1/completions", content=data, timeout=30, **kw)


def stats(url):
    return httpx.get(url + "/stats", timeout=10).json()


BAD = [
    (b"{not json", "body"),
    (b"[1, 2, 3]", "body"),
    ({"max_tokens": 4}, "prompt"),
    ({"prompt": 5, "max_tokens": 4}, "prompt"),
    ({"prompt": [1, "a"], "max_tokens": 4}, "prompt"),
    ({"prompt": [1, 300], "max_tokens": 4}, "prompt"),
    ({"prompt": "", "max_tokens": 4}, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": "4"}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 255}, "max_tokens"),   # 2 + 255 > 256, the context
    ({"prompt": "hi", "max_tokens": 4, "stream": "yes"}, "stream"),
    ({"prompt": "hi", "max_tokens": 4, "model": 3}, "model"),
]


@pytest.mark.parametrize("body, field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_request_gets_400_naming_the_field(server, body, field):
    r = post(server.url, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"] or field == "body"
    assert err["type"] == "invalid_request_error"


def test_server_keeps_serving_after_bad_requests(server, model):
    for body, _ in BAD:
        post(server.url, body)
    r = post(server.url, {"prompt": "hello", "max_tokens": 5})
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["token_ids"] == tinymodel.generate_one(model, list(b"hello"), 5)
    assert choice["text"] == "".join(chr(t) for t in choice["token_ids"])
    assert r.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


def test_stream_is_sse_ending_in_done(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                      json={"prompt": [1, 2, 3], "max_tokens": 3, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and len(lines) == 4
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert all(c["object"] == "text_completion" for c in chunks)


def test_tokens_over_http_equal_the_model_alone(server, model):
    """Eight different requests sent together share batches; each gets its solo tokens."""
    reqs = loadtest.make_requests(8, seed=3)
    res = loadtest.run_load_test(server.url, reqs, rate=float("inf"), progress=False,
                                 time_limit=30)
    assert res.completed.all()
    for req, rec in zip(reqs, res.records):
        assert rec.tokens == tinymodel.generate_one(model, req.prompt, req.max_tokens)


def test_disconnect_mid_stream_frees_the_slot(small_server, model):
    url = small_server.url
    before = stats(url)
    body = {"prompt": list(range(10)), "max_tokens": 240, "stream": True}
    with httpx.Client(timeout=30) as client:
        for _ in range(2):  # fill both slots, read a couple of tokens, hang up
            with client.stream("POST", url + "/v1/completions", json=body) as r:
                lines = r.iter_lines()
                next(lines), next(lines)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = stats(url)
        if s["running"] == 0 and s["free_slots"] == 2:
            break
        time.sleep(0.05)
    assert s["running"] == 0 and s["free_slots"] == 2 and s["waiting"] == 0
    assert s["cancelled"] - before["cancelled"] == 2
    # the slots serve the next requests correctly
    r = post(url, {"prompt": [7, 8, 9], "max_tokens": 6})
    assert r.json()["choices"][0]["token_ids"] == tinymodel.generate_one(model, [7, 8, 9], 6)


def test_over_the_queue_limit_answers_429(small_server):
    reqs = [loadtest.LoadRequest(list(range(20)), 200)] * 12
    res = loadtest.run_load_test(small_server.url, reqs, rate=float("inf"), progress=False,
                                 time_limit=60)
    codes = [r.status for r in res.records]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 12 - 4 - 2  # 2 slots + 2 queue places (+ a little timing slack)
    assert codes.count(200) >= 4
    refused = [r for r in res.records if r.status == 429]
    assert all(json.loads(r.error)["error"]["type"] == "rate_limit_error" for r in refused)
    assert all(r.ok for r in res.records if r.status == 200)
    assert post(small_server.url, {"prompt": "ok", "max_tokens": 2}).status_code == 200


def test_bounded_load_test_loses_nothing(server):
    reqs = loadtest.make_requests(300, seed=11)
    res = loadtest.run_load_test(server.url, reqs, rate=60.0, seed=11, progress=False,
                                 time_limit=90)
    assert not res.timed_out
    assert len(res.records) == 300
    bad = [(i, r.status, r.error) for i, r in enumerate(res.records) if not r.ok]
    assert not bad, bad[:5]
    assert all(r.well_formed and r.done for r in res.records)
    assert sum(len(r.tokens) for r in res.records) == sum(q.max_tokens for q in reqs)
    s = res.summary(ttft_slo=1.0, tpot_slo=0.1)
    assert s["completed"] == 300 and s["ttft_p99"] >= s["ttft_median"] > 0


def test_steps_log_is_fit_ready(server):
    httpx.delete(server.url + "/steps", timeout=10)
    post(server.url, {"prompt": [1, 2, 3, 4], "max_tokens": 3})
    steps = httpx.get(server.url + "/steps", timeout=10).json()["steps"]
    # one prefill of 4 tokens, then two decode steps of one sequence (context 4, then 5)
    assert [(s["prefill_tokens"], s["decode_seqs"], s["context_tokens"]) for s in steps] == [
        (4, 0, 0), (0, 1, 4), (0, 1, 5)]
    assert all(s["seconds"] > 0 for s in steps)


def test_refuses_a_non_loopback_host():
    out = subprocess.run([sys.executable, "-m", "scalesim_course.cli", "serve", "--host",
                          "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "loopback" in out.stderr


def test_the_address_printed_accepts_connections_at_once(monkeypatch, capsys):
    """When "listening on" is printed the socket already listens: a client connecting before the
    event loop runs waits in the backlog instead of being refused."""
    import argparse
    import asyncio
    import re
    import socket

    from scalesim_course import serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--max-seq-len", "32"])
    connected = []

    def instead_of_serving(coro):
        coro.close()  # the server never runs: only the socket as printed is tried
        port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)",
                             capsys.readouterr().out).group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            connected.append(port)

    monkeypatch.setattr(asyncio, "run", instead_of_serving)
    assert serve.run(args) == 0
    assert len(connected) == 1


def test_stops_after_idle_timeout():
    proc = ServerProcess(idle_timeout=1.0)
    try:
        proc.start()
        proc.proc.wait(timeout=20)
        assert proc.proc.returncode == 0
    finally:
        proc.stop()


def test_parse_request_defaults_and_errors():
    got = parse_completion_request(b'{"prompt": "ab"}', 256, 256)
    assert got == {"prompt": [97, 98], "max_tokens": 16, "stream": False,
                   "model": "scalesim-tiny"}
    with pytest.raises(RequestError) as err:
        parse_completion_request(b'{"prompt": "ab", "max_tokens": true}', 256, 256)
    assert err.value.param == "max_tokens"
