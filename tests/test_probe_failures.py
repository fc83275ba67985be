"""The probe, part two: what a live `ragkb serve` does when what it leans on fails mid-run (`make probe`; all slow).

- The LLM endpoint (`RAGKB_LLM_PROVIDER=openai`) is a local HTTP server speaking the OpenAI chat-completions wire
  protocol, switched between answering well, being down, never answering, answering malformed JSON and
  malformed, cut-off or broken SSE. The documented fallback is the extractive answer, `degraded: true`, with an
  `error` that names what failed (and an `error` event before it when streaming).
- Redis is a real `redis-server` started on a free port for the test (the answer cache, the rate limiter and the
  ingestion queue when it is Redis), stopped with SIGSTOP and killed while the server serves.

What must hold in every case: never a 5xx, the request id on every answer, no request waiting much past the
configured timeout, `/healthz` fast meanwhile, nothing a failure produced written to the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ingest.embedder import Embedder

from .processes import clean_env
from .servers import ChromaServer, free_port, ragkb_serving
from .test_probe import COLLECTION, Stalls, check_error, probe_line, seed

pytestmark = pytest.mark.slow

QUESTION = "Where are the spare keys for the boiler room kept?"
ANSWER = "Spare keys for the boiler room are kept in the locked cabinet at reception [1]."
LLM_TIMEOUT = 2.0  # RAGKB_LLM_TIMEOUT of the probe's server
LLM_RETRIES = 1


# -- an OpenAI-compatible endpoint that fails on demand -----------------------------------------------------------


def _delta(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    event = {"id": "c1", "object": "chat.completion.chunk", "model": "probe", "choices": [choice]}
    return f"data: {json.dumps(event)}\n\n".encode()


def _completion(text: str) -> bytes:
    return json.dumps({
        "id": "c1", "object": "chat.completion", "model": "probe",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 12},
    }).encode()  # fmt: skip


class FaultyLLM:
    """`POST /v1/chat/completions` over real HTTP on a loopback port; `mode` decides the next answers:

    ok              a well-formed answer (SSE ending in `[DONE]` when streaming, else JSON)
    http_500        HTTP 500 with an error body
    hang            accepts the request and never answers (until the test ends)
    malformed_json  200 `application/json` that does not parse
    malformed_sse   one good event, then one that is not JSON
    cut_sse         one good event, then the connection is closed cleanly: no `[DONE]`, no finish_reason
    broken_sse      chunked; one good event, then a chunk that breaks off mid-way
    `stop()` closes the port (down: connection refused), `start()` opens it again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.mode = "ok"
        self.requests = 0
        self.release = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                owner.requests += 1
                owner.answer(self, owner.mode, bool(body.get("stream")))

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def answer(self, handler: BaseHTTPRequestHandler, mode: str, stream: bool) -> None:
        out = handler.wfile
        if mode == "hang":
            self.release.wait(60)
            return
        if mode == "http_500":
            self._plain(handler, 500, b'{"error": {"message": "model crashed"}}')
        elif mode == "malformed_json":
            self._plain(handler, 200, b'{"choices": [{"message": {"content": "Spare keys')
        elif not stream:
            self._plain(handler, 200, _completion(ANSWER))
        elif mode == "broken_sse":
            handler.send_response(200)
            handler.send_header("content-type", "text/event-stream")
            handler.send_header("transfer-encoding", "chunked")
            handler.end_headers()
            first = _delta("Spare keys for the boiler room ")
            out.write(b"%x\r\n%s\r\n" % (len(first), first))
            out.write(b'400\r\ndata: {"choices": [{"delta"')  # 1024 bytes announced, 30 sent
            out.flush()
            handler.close_connection = True
        else:
            handler.send_response(200)
            handler.send_header("content-type", "text/event-stream")
            handler.send_header("connection", "close")
            handler.end_headers()
            if mode == "malformed_sse":
                out.write(_delta("Spare keys for the boiler room ") + b'data: {"choices": [{"delta": {"content": \n\n')
                out.write(b"data: [DONE]\n\n")
            elif mode == "cut_sse":
                out.write(_delta("Spare keys for the boiler room are kept in the locked cabinet at reception [1]. "))
                out.write(_delta("Also, on Sundays the"))
            else:
                words = ANSWER.split(" ")
                for word in words[:-1]:
                    out.write(_delta(word + " "))
                out.write(_delta(words[-1]) + _delta("", "stop") + b"data: [DONE]\n\n")
            out.flush()
            handler.close_connection = True

    @staticmethod
    def _plain(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()


@contextmanager
def serving(
    root: Path, embedder: Embedder, **settings: str
) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes], Path]]:
    """`ragkb serve` on a fresh data dir with the seed document and a write key; yields (base URL, headers,
    process, log)."""
    env = clean_env(
        RAGKB_DATA_DIR=str(root / "kb"),
        RAGKB_RATE_LIMIT_PER_MINUTE="1000000",
        RAGKB_RATE_LIMIT_BURST="1000000",
        **settings,
    )
    headers = {"Authorization": f"Bearer {seed(env, root, embedder, ['write'])['write']}"}
    log = root / "serve.log"
    with ragkb_serving(env, log) as (url, process):
        yield url, headers, process, log
    assert "Traceback" not in log.read_text(), f"the server logged an unexpected error:\n{log.read_text()[-3000:]}"


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


# -- the LLM endpoint ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm() -> Iterator[FaultyLLM]:
    endpoint = FaultyLLM()
    endpoint.start()
    yield endpoint
    endpoint.release.set()
    endpoint.stop()


@pytest.fixture(scope="module")
def llm_server(
    tmp_path_factory: pytest.TempPathFactory, llm: FaultyLLM, embedder: Embedder
) -> Iterator[tuple[str, dict[str, str], Path]]:
    settings = {
        "RAGKB_LLM_PROVIDER": "openai",
        "RAGKB_LLM_BASE_URL": llm.base_url,
        "RAGKB_LLM_MODEL": "probe",
        "RAGKB_LLM_TIMEOUT": str(LLM_TIMEOUT),
        "RAGKB_LLM_RETRIES": str(LLM_RETRIES),
        "RAGKB_LLM_BREAKER_FAILURES": "0",  # every request tries the LLM (the breaker is tests/test_hardening's)
        "RAGKB_AGENT_SECONDS": str(AGENT_SECONDS),
    }
    with serving(tmp_path_factory.mktemp("probe-llm"), embedder, **settings) as (base, headers, _, log):
        yield base, headers, log


# the longest a failing LLM may hold one answer: every attempt times out, plus the backoff between them and slack
WORST_LLM_SECONDS = LLM_TIMEOUT * (LLM_RETRIES + 1) + 0.5 * LLM_RETRIES + 4

FAILURES = {
    "down (connection refused)": "down",
    "HTTP 500": "http_500",
    "never answering": "hang",
    "malformed JSON": "malformed_json",
    "malformed SSE event": "malformed_sse",
    "SSE cut off before [DONE]": "cut_sse",
    "SSE connection broken mid-chunk": "broken_sse",
}


def _ask(base: str, headers: dict[str, str], *, stream: bool) -> tuple[httpx.Response, float]:
    body = {"question": QUESTION, "collection": COLLECTION, "stream": stream}
    start = time.monotonic()
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        response = client.post("/v1/query", json=body)
    return response, time.monotonic() - start


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failing_llm_gets_the_extractive_answer_in_bounded_time(
    llm: FaultyLLM, llm_server: tuple[str, dict[str, str], Path], failure: str, stream: bool
) -> None:
    base, headers, log = llm_server
    mode = FAILURES[failure]
    if mode == "down":
        llm.stop()
    llm.mode = mode
    try:
        with Stalls(base) as stalls:
            response, took = _ask(base, headers, stream=stream)
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:  # another door meanwhile
                retrieved = client.post("/v1/retrieve", json={"question": QUESTION, "collection": COLLECTION})
    finally:
        llm.mode = "ok"
        if mode == "down":
            llm.start()
    check_error(response, failure)
    assert response.status_code == 200, response.text
    assert retrieved.status_code == 200, retrieved.text
    if stream:
        events = sse_events(response.text)
        names = [name for name, _ in events]
        assert names[-1] == "done" and "error" in names, names
        answer = events[-1][1]
    else:
        answer = response.json()
    assert answer["degraded"] and answer["provider"] == "extractive", answer
    assert answer["error"] and str(llm.port) not in answer["error"], answer["error"]
    assert answer["citations"] and not answer["cached"], answer
    assert answer["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-request-id"] in log.read_text(), "the log has the failure under the request id"
    assert took < WORST_LLM_SECONDS, f"{failure}: {took:.1f}s"
    assert not stalls.errors and stalls.worst < 2, (stalls.errors, stalls.worst)
    probe_line(
        f"LLM {failure} ({'stream' if stream else 'json'})",
        f"200 degraded, extractive answer with {len(answer['citations'])} citations, error {answer['error']!r} "
        f"in {took:.1f}s (bound {WORST_LLM_SECONDS:.1f}s); /healthz at worst {stalls.worst:.2f}s",
    )


AGENT_SECONDS = 15.0  # RAGKB_AGENT_SECONDS of the probe's server


@pytest.mark.parametrize("failure", ["down (connection refused)", "never answering", "malformed JSON",
                                     "SSE cut off before [DONE]"])  # fmt: skip
def test_a_failing_llm_in_agent_mode_answers_within_its_budget(
    llm: FaultyLLM, llm_server: tuple[str, dict[str, str], Path], failure: str
) -> None:
    """Agent mode calls the LLM to plan (JSON) and to draft (streamed): it falls back to the rule planner and
    the extractive drafts, within the agent's time budget, and caches nothing degraded."""
    base, headers, _ = llm_server
    mode = FAILURES[failure]
    if mode == "down":
        llm.stop()
    llm.mode = mode
    body = {"question": f"{QUESTION} And when is the boiler room inspected?", "collection": COLLECTION,
            "mode": "agent"}  # fmt: skip
    try:
        with Stalls(base) as stalls, httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            response, took = _timed(lambda: client.post("/v1/query", json=body))
    finally:
        llm.mode = "ok"
        if mode == "down":
            llm.start()
    check_error(response, f"agent mode, LLM {failure}")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["citations"] and not answer["cached"], answer
    assert answer["degraded"], answer
    assert took < AGENT_SECONDS + WORST_LLM_SECONDS, f"agent mode took {took:.1f}s"
    assert not stalls.errors and stalls.worst < 2, (stalls.errors, stalls.worst)
    probe_line(
        f"LLM {failure} (agent mode)",
        f"200 degraded, {len(answer['citations'])} citations, error {answer['error']!r} in {took:.1f}s; /healthz at "
        f"worst {stalls.worst:.2f}s",
    )


def test_after_the_llm_failures_the_cache_holds_only_the_good_answer(
    llm: FaultyLLM, llm_server: tuple[str, dict[str, str], Path]
) -> None:
    """Runs after the failures (same module, same question): none of their answers was remembered, so the first
    good LLM answer is generated, and only then cached."""
    base, headers, _ = llm_server
    llm.mode = "ok"
    before = llm.requests
    first, _ = _ask(base, headers, stream=False)
    second, _ = _ask(base, headers, stream=False)
    one, two = first.json(), second.json()
    assert one["provider"] == "openai" and not one["degraded"] and not one["cached"], one
    assert llm.requests == before + 1, "the first good answer was generated, the second came from the cache"
    assert two["cached"] and two["answer"] == one["answer"] == ANSWER, two
    probe_line("LLM back after the failures", f"generated {one['answer']!r}, then served from the cache")


# -- Redis --------------------------------------------------------------------------------------------------------


class RedisServer:
    """A `redis-server` of the test's own on a free port (no persistence), to stop, continue, kill and restart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is installed (Debian package redis-server)"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not come up"
                time.sleep(0.05)

    def signal(self, number: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.signal(signal.SIGCONT)
    server.kill()


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def _query(client: httpx.Client, question: str) -> tuple[httpx.Response, float]:
    return _timed(lambda: client.post("/v1/query", json={"question": question, "collection": COLLECTION}))


REDIS_WORST_SECONDS = 5.0  # what one query may cost while Redis does not answer (its client timeouts and slack)


def test_redis_cache_and_rate_limiter_stopped_and_killed_mid_run(
    tmp_path: Path, redis_server: RedisServer, embedder: Embedder
) -> None:
    """The answer cache and the rate limiter on a Redis that is stopped (SIGSTOP: connections hang), then
    continued, then killed (connection refused), then started again: queries answer throughout."""
    url = redis_server.url(0)
    results: list[str] = []
    with (
        serving(tmp_path, embedder, RAGKB_CACHE_URL=url, RAGKB_RATE_LIMIT_URL=url) as (base, headers, _, _log),
        httpx.Client(base_url=base, headers=headers, timeout=60) as client,
    ):
        first, _ = _query(client, "When is the boiler room inspected?")
        assert first.status_code == 200 and not first.json()["cached"], first.text
        again, _ = _query(client, "When is the boiler room inspected?")
        assert again.json()["cached"], "Redis caches while it is up"
        keys_before = set(redis.Redis.from_url(url).scan_iter(match="ragkb:cache:*"))

        for state, act in (("stopped (SIGSTOP)", lambda: redis_server.signal(signal.SIGSTOP)),
                           ("killed", redis_server.kill)):  # fmt: skip
            act()
            with Stalls(base) as stalls:
                answers = [_query(client, f"Where are the spare keys kept? ({state} {n})") for n in range(3)]
                ready, _ = _timed(lambda: client.get("/readyz"))
            for response, took in answers:
                check_error(response, f"query with Redis {state}")
                assert response.status_code == 200, response.text
                assert response.json()["citations"], response.json()
                assert took < REDIS_WORST_SECONDS, f"a query took {took:.1f}s with Redis {state}"
            assert ready.status_code == 200 and "degraded" in json.dumps(ready.json()), ready.text
            assert not stalls.errors and stalls.worst < 2, (stalls.errors, stalls.worst)
            worst = max(took for _, took in answers)
            results.append(
                f"{state}: queries 200 (slowest {worst:.1f}s), /readyz degraded, /healthz {stalls.worst:.2f}s"
            )
            if state.startswith("stopped"):
                redis_server.signal(signal.SIGCONT)
                back, _ = _query(client, "When is the boiler room inspected?")
                assert back.status_code == 200, back.text

        redis_server.start()  # an empty Redis on the same port: nothing written while it was away
        time.sleep(1)
        recovered, _ = _query(client, "When is the boiler room inspected?")
        repeat, _ = _query(client, "When is the boiler room inspected?")
        assert recovered.status_code == repeat.status_code == 200
        assert repeat.json()["cached"], "the cache works again once Redis is back"
        assert recovered.json()["answer"] == first.json()["answer"]
        store = redis.Redis.from_url(url)
        for key in store.scan_iter(match="ragkb:cache:*"):
            if b":counter:" not in key:
                value = json.loads(store.get(key) or b"{}")
                assert value.get("citations") or value.get("abstained"), value
        assert keys_before, "the cache had entries before the failure"
    probe_line("Redis cache and rate limiter", "; ".join(results) + "; back: cached again")


def test_redis_queue_stopped_and_killed_mid_run(tmp_path: Path, redis_server: RedisServer, embedder: Embedder) -> None:
    """Uploads queued on Redis (with a Chroma server, the set-up a queue needs): while Redis is stopped or
    killed, an upload is refused with 503 `queue_unavailable` and the request id, nothing stored; the other
    requests go on."""
    with ChromaServer(tmp_path / "chroma") as chroma_url:
        settings = {"RAGKB_CHROMA_URL": chroma_url, "RAGKB_QUEUE_URL": redis_server.url(1)}
        results: list[str] = []
        with (
            serving(tmp_path, embedder, **settings) as (base, headers, _, _log),
            httpx.Client(base_url=base, headers=headers, timeout=60) as client,
        ):

            def upload(name: str) -> tuple[httpx.Response, float]:
                files = [("files", (name, b"# Night shift\n\nThe night shift starts at ten.\n", "text/markdown"))]
                return _timed(lambda: client.post(f"/v1/collections/{COLLECTION}/documents", files=files))

            queued, _ = upload("queued.md")
            assert queued.status_code == 202, queued.text
            for state, act in (("stopped (SIGSTOP)", lambda: redis_server.signal(signal.SIGSTOP)),
                               ("killed", redis_server.kill)):  # fmt: skip
                act()
                with Stalls(base) as stalls:
                    refused, took = upload(f"refused-{state[:4]}.md")
                    asked, _ = _query(client, "When is the boiler room inspected?")
                check_error(refused, f"upload with the queue's Redis {state}", unavailable=True)
                assert refused.status_code == 503 and refused.json()["code"] == "queue_unavailable", refused.text
                assert took < 15, f"the refusal took {took:.1f}s"
                assert asked.status_code == 200, asked.text
                assert not stalls.errors and stalls.worst < 2, (stalls.errors, stalls.worst)
                results.append(
                    f"{state}: upload 503 queue_unavailable in {took:.1f}s, queries 200, /healthz {stalls.worst:.2f}s"
                )
                if state.startswith("stopped"):
                    redis_server.signal(signal.SIGCONT)
            listed = client.get(f"/v1/collections/{COLLECTION}/documents").json()
            assert not any("refused" in d["source"] for d in listed), listed
    probe_line("Redis queue", "; ".join(results) + "; nothing of the refused uploads stored")
