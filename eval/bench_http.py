"""HTTP load benchmark: wrk against a real `ragkb serve`, with a bare FastAPI route as the ceiling, in one run.

    python -m eval.bench_http [--duration 5] [--connections 1 16] [--repeats 3] [--json FIGURES.json]

It ingests the demo collection (`data/`, README.md excluded; unchanged files are skipped on later runs) into its
own data dir, `.ragkb/bench-http`, starts `ragkb serve` on a free loopback port in open mode (no keys) with the
rate limits raised out of the way, and `python -m eval.bench_http_ceiling` (the same uvicorn, one worker each)
returning a JSON body the same size as the cache-hit answer. Then, at each connection count, wrk runs:

- `cache-hit`: `/v1/query` with the same question every time (asked beforehand until its answer says `cached`);
- `query-uncached`: `/v1/query` (extractive provider), each request a new question: the demo questions in turn,
  each followed by a tag unique to the run, wrk thread and request, so neither the answer cache nor the
  question-vector cache ever has it (the encoder runs every time);
- `cache-hit-route`: the same cache hit on a second `ragkb serve` with `RAGKB_FAST_LANE=false` (its own data dir,
  `--data-dir` + `-route`): the route's way, for the cached answer lane's gain in the same run;
- `retrieve-hybrid`: `/v1/retrieve` with `retriever: hybrid`, new questions the same way;
- `ceiling`: the bare route, with the cache hit's request body.

Every scenario runs `--repeats` times, round-robin (the machine is shared: a burst of someone else's load then
spreads over scenarios instead of sinking one); the table gives each figure's median over the repeats, the
ratio of the median req/s to the ceiling's at the same connections, the responses that were not 2xx (counted by
the wrk script's `response` hook; any is reported, and the run exits non-zero), ragkb's answer-cache hits and
misses during the scenario (from its /metrics: the cache-hit rows must be all hits, the uncached all misses) and
the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

DATA_DIR = Path(".ragkb") / "bench-http"
COLLECTION = "demo"
CACHE_HIT_QUESTION = "How do I install ragkb?"
# Questions about the demo guides (data/guides), asked in turn by the uncached scenarios.
QUESTIONS = (
    "How do I install ragkb",
    "What are the requirements for running ragkb",
    "Which embedding model does ragkb use",
    "Where does ragkb store its data",
    "How are documents split into chunks",
    "What limits apply to uploaded files",
    "How do I create a new collection",
    "How do I add documents to the knowledge base",
    "How do I remove a document",
    "What should I do when a query returns nothing",
    "How large can an uploaded file be",
    "How many tokens does a chunk hold",
    "Can ragkb run without a GPU",
    "How do I change the chunk overlap",
    "Which file types can be ingested",
    "How do I serve the API on another port",
)
SCENARIOS = ("cache-hit", "cache-hit-route", "query-uncached", "retrieve-hybrid", "ceiling")
# the suffix of `cache-hit-route`'s own data dir, beside --data-dir (the docstring above)
ROUTE_SUFFIX = "-route"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_json.lua"
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_LATENCY_LINE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS_PER_SECOND = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_API_REQUESTS = re.compile(r'^ragkb_http_request_seconds_count\{[^}]*route="/v1/[^}]*\}\s+([\d.e+]+)$', re.MULTILINE)
_CACHE_EVENT = re.compile(r'^ragkb_cache_events_total\{outcome="(\w+)"\}\s+([\d.e+]+)$', re.MULTILINE)


@dataclass
class WrkRun:
    """One wrk run's figures: req/s and percentiles from wrk's `--latency` report, p95 and the status counts from
    the Lua script's `done` line."""

    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    non2xx_by_status: dict[str, int]
    socket_errors: dict[str, int]
    load_average_1m: float
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass
class Scenario:
    name: str
    connections: int
    runs: list[WrkRun] = field(default_factory=list)

    def median(self, figure: str) -> float:
        return float(statistics.median(getattr(run, figure) for run in self.runs))


def parse_wrk_output(text: str, load_average: float) -> WrkRun:
    """The figures of one wrk run from its stdout (`--latency` report plus the script's RAGKB_WRK line)."""
    rate = _REQUESTS_PER_SECOND.search(text)
    latencies = {int(p): float(v) * _UNITS_MS[unit] for p, v, unit in _LATENCY_LINE.findall(text)}
    script_line = next((line for line in text.splitlines() if line.startswith("RAGKB_WRK ")), None)
    if rate is None or 50 not in latencies or 99 not in latencies or script_line is None:
        raise RuntimeError(f"unexpected wrk output (need --latency and eval/wrk/post_json.lua):\n{text}")
    counts: dict[str, Any] = json.loads(script_line.removeprefix("RAGKB_WRK "))
    errors = {kind: int(n) for kind, n in counts["errors"].items() if kind != "status"}
    return WrkRun(
        requests_per_second=float(rate.group(1)),
        p50_ms=latencies[50],
        p95_ms=float(counts["p95_ms"]),
        p99_ms=latencies[99],
        requests=int(counts["requests"]),
        non2xx=int(counts["non2xx"]),
        non2xx_by_status={str(k): int(v) for k, v in counts["non2xx_by_status"].items()},
        socket_errors=errors,
        load_average_1m=load_average,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server for {url} did not come up in {timeout:.0f} s")
        time.sleep(0.2)


def server_env(data_dir: Path) -> dict[str, str]:
    """The parent's environment without any RAGKB_* setting (no shared cache, database or queue sneaks in), plus
    the bench's own: its data dir, the demo collection, the extractive provider and rate limits out of the way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGKB_")}
    env.update(
        RAGKB_DATA_DIR=str(data_dir),
        RAGKB_DEFAULT_COLLECTION=COLLECTION,
        RAGKB_LLM_PROVIDER="extractive",
        RAGKB_RATE_LIMIT_PER_MINUTE="1e9",
        RAGKB_RATE_LIMIT_BURST="1000000000",
    )
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.bin = Path(sys.executable).parent
        self.env = server_env(args.data_dir)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ragkb_url = self.ceiling_url = self.route_url = ""
        self.cache_hit_bytes = 0
        self.log_path = work / "servers.log"
        self.log: BinaryIO | None = None

    def start(self) -> None:
        self.ragkb_url = self.serve(self.env)
        if "cache-hit-route" in self.args.scenarios:
            self.route_url = self.serve(
                {**server_env(Path(f"{self.args.data_dir}{ROUTE_SUFFIX}")), "RAGKB_FAST_LANE": "false"}
            )
            self.warm(self.route_url)

        answer = self.warm(self.ragkb_url)
        body_file = self.work / "answer.json"
        body_file.write_bytes(answer)
        port = free_port()
        ceiling = [sys.executable, "-m", "eval.bench_http_ceiling", "--port", str(port), "--body", str(body_file)]
        log = self.log = self.log or self.log_path.open("ab")
        self.processes.append(subprocess.Popen(ceiling, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        self.ceiling_url = f"http://127.0.0.1:{port}"
        wait_for(f"{self.ceiling_url}/healthz", self.processes[-1], timeout=60)
        ceiling_bytes = len(httpx.post(f"{self.ceiling_url}/v1/query", json={}).content)
        print(f"cache-hit answer {self.cache_hit_bytes} bytes, ceiling body {ceiling_bytes} bytes", flush=True)

    def serve(self, env: dict[str, str]) -> str:
        """Ingest the demo collection into the env's data dir and start `ragkb serve` on it; its URL."""
        ingest = [str(self.bin / "ragkb"), "ingest", "data/", "--exclude", "README.md"]
        print(f"ingesting the demo collection into {env['RAGKB_DATA_DIR']} ...", flush=True)
        subprocess.run(ingest, env=env, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        serve = [str(self.bin / "ragkb"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        log = self.log = self.log or self.log_path.open("ab")
        self.processes.append(subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/readyz", self.processes[-1], timeout=180)
        return url

    def url_of(self, scenario: str) -> str:
        return {"ceiling": self.ceiling_url, "cache-hit-route": self.route_url}.get(scenario, self.ragkb_url)

    def warm(self, url: str) -> bytes:
        """Ask the cache-hit question until it is cached, and one question per uncached scenario (loads the
        lexical index and the reader's state); returns the cache-hit answer's body."""
        body = self.cache_hit_body()
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(3):
                reply = client.post("/v1/query", content=body, headers={"content-type": "application/json"})
                reply.raise_for_status()
                if reply.json()["cached"]:
                    break
            else:
                raise RuntimeError("the cache-hit question is still not cached after 3 requests")
            self.cache_hit_bytes = len(reply.content)
            warm_question = f"{QUESTIONS[0]} (warm-up {time.time_ns()})"
            client.post("/v1/query", json={"question": warm_question, "collection": COLLECTION}).raise_for_status()
            client.post(
                "/v1/retrieve", json={"question": warm_question, "collection": COLLECTION, "retriever": "hybrid"}
            ).raise_for_status()
        return reply.content

    def cache_hit_body(self) -> bytes:
        return json.dumps({"question": CACHE_HIT_QUESTION, "collection": COLLECTION}).encode()

    def wrk_command(self, scenario: str, connections: int) -> list[str]:
        threads = self.args.threads or min(connections, os.cpu_count() or 1)
        questions = self.work / "questions.txt"
        if scenario in ("cache-hit", "cache-hit-route", "ceiling"):
            template, extra = self.work / "cache-hit.json", []
            template.write_bytes(self.cache_hit_body())
        else:
            questions.write_text("\n".join(QUESTIONS) + "\n")
            body: dict[str, Any] = {"question": "{question}", "collection": COLLECTION}
            if scenario == "retrieve-hybrid":
                body["retriever"] = "hybrid"
            template, extra = self.work / f"{scenario}.json", [str(questions), str(time.time_ns())]
            template.write_text(json.dumps(body))
        path = "/v1/retrieve" if scenario == "retrieve-hybrid" else "/v1/query"
        base = self.url_of(scenario)
        return [
            "wrk",
            "--latency",
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={self.args.duration}s",
            f"--timeout={self.args.timeout}s",
            f"--script={WRK_SCRIPT}",
            f"{base}{path}",
            "--",
            str(template),
            *extra,
        ]

    def run(self, scenario: Scenario) -> WrkRun:
        load = os.getloadavg()[0]
        command = self.wrk_command(scenario.name, scenario.connections)
        url = self.ragkb_url if scenario.name == "ceiling" else self.url_of(scenario.name)
        before = self.cache_events(url)
        done = subprocess.run(command, capture_output=True, text=True, timeout=self.args.duration + 120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        run = parse_wrk_output(done.stdout, load)
        after = self.drain(url) if scenario.name != "ceiling" else before
        run.cache_hits = after.get("hit", 0) - before.get("hit", 0)
        run.cache_misses = after.get("miss", 0) - before.get("miss", 0)
        return run

    def cache_events(self, url: str) -> dict[str, int]:
        """A ragkb server's answer-cache lookups so far by outcome, and "api" its finished /v1/ requests (its
        /metrics)."""
        text = httpx.get(f"{url}/metrics", timeout=30).raise_for_status().text
        events = {outcome: int(float(n)) for outcome, n in _CACHE_EVENT.findall(text)}
        events["api"] = sum(int(float(n)) for n in _API_REQUESTS.findall(text))
        return events

    def drain(self, url: str, quiet: float = 1.0, limit: float = 120.0) -> dict[str, int]:
        """Wait until the requests wrk left in flight when it stopped (up to one per connection) have finished,
        i.e. ragkb's count of finished /v1/ requests has not moved for `quiet` seconds, so they neither load the
        next scenario nor go uncounted; returns the cache events then."""
        deadline = time.monotonic() + limit
        events = self.cache_events(url)
        while time.monotonic() < deadline:
            time.sleep(quiet)
            latest = self.cache_events(url)
            if latest["api"] == events["api"]:
                return latest
            events = latest
        raise RuntimeError(f"ragkb was still finishing requests {limit:.0f} s after wrk stopped")

    def close(self) -> None:
        for process in reversed(self.processes):
            stop(process)
        if self.log is not None:
            self.log.close()

    def server_log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def report(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    ceilings = {s.connections: s.median("requests_per_second") for s in scenarios if s.name == "ceiling"}
    rows = []
    for s in scenarios:
        rate = s.median("requests_per_second")
        ceiling = ceilings.get(s.connections)
        rows.append(
            {
                "scenario": s.name,
                "connections": s.connections,
                "requests_per_second": round(rate, 1),
                "p50_ms": round(s.median("p50_ms"), 3),
                "p95_ms": round(s.median("p95_ms"), 3),
                "p99_ms": round(s.median("p99_ms"), 3),
                "ratio_to_ceiling": round(rate / ceiling, 3) if ceiling else None,
                "requests_per_second_runs": [round(r.requests_per_second, 1) for r in s.runs],
                "non2xx": sum(r.non2xx for r in s.runs),
                "cache_hits": sum(r.cache_hits for r in s.runs),
                "cache_misses": sum(r.cache_misses for r in s.runs),
                "socket_errors": sum(sum(r.socket_errors.values()) for r in s.runs),
                "load_average_1m": [round(r.load_average_1m, 2) for r in s.runs],
                "runs": [asdict(r) for r in s.runs],
            }
        )
    header = f"{'scenario':<16} {'conns':>5} {'req/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'÷ceiling':>8}"
    print(f"\nmedians of {len(scenarios[0].runs)} run(s) each (req/s of every run and the load average per row below)")
    print(header + f" {'non-2xx':>7} {'sock err':>8} {'cache hit/miss':>15}")
    for row in rows:
        ratio = f"{row['ratio_to_ceiling']:.3f}" if row["ratio_to_ceiling"] is not None else "-"
        print(
            f"{row['scenario']:<16} {row['connections']:>5} {row['requests_per_second']:>9.1f} {row['p50_ms']:>9.2f} "
            f"{row['p95_ms']:>9.2f} {row['p99_ms']:>9.2f} {ratio:>8} {row['non2xx']:>7} {row['socket_errors']:>8} "
            f"{str(row['cache_hits']) + '/' + str(row['cache_misses']):>15}"
        )
    for row in rows:
        print(
            f"  {row['scenario']} x{row['connections']}: req/s {row['requests_per_second_runs']}, "
            f"load 1m {row['load_average_1m']}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="Seconds per wrk run (default 5).")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per scenario; the table gives medians.")
    parser.add_argument(
        "--threads", type=int, default=0, help="wrk threads (default: one per connection, at most one per core)."
    )
    parser.add_argument("--timeout", type=int, default=30, help="Seconds before wrk counts a request as timed out.")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--json", type=Path, help="Also write the figures (every run) to this file.")
    args = parser.parse_args(argv)
    for name in ("duration", "repeats", "timeout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(c < 1 for c in args.connections) or args.threads < 0:
        parser.error("--connections must be at least 1 and --threads at least 0 (0: automatic)")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: run `make wrk` (Debian's package, as root or with sudo)")
    if not Path("data").is_dir():
        parser.error("run from the repository root (the demo collection is data/)")

    scenarios = [Scenario(name, c) for c in args.connections for name in args.scenarios]
    started = uptime()
    with tempfile.TemporaryDirectory(prefix="ragkb-bench-http-") as work:
        bench = Bench(args, Path(work))
        try:
            try:
                bench.start()
            except Exception:
                print(f"the servers' output:\n{bench.server_log()}", file=sys.stderr)
                raise
            print(f"at start: {started}", flush=True)
            for repeat in range(args.repeats):
                for scenario in scenarios:
                    run = bench.run(scenario)
                    scenario.runs.append(run)
                    print(
                        f"  [{repeat + 1}/{args.repeats}] {scenario.name} x{scenario.connections}: "
                        f"{run.requests_per_second:.1f} req/s, p50 {run.p50_ms:.2f} ms, non-2xx {run.non2xx}",
                        flush=True,
                    )
        finally:
            bench.close()
        cache_hit_bytes = bench.cache_hit_bytes
    ended = uptime()
    print(f"at end: {ended}")
    rows = report(scenarios)
    if args.json is not None:
        figures = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
            "cache_hit_answer_bytes": cache_hit_bytes,
            "uptime_start": started,
            "uptime_end": ended,
            "cpu_count": os.cpu_count(),
            "scenarios": rows,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    bad = sum(row["non2xx"] + row["socket_errors"] for row in rows)
    if bad:
        print(f"{bad} responses were not 2xx or failed at the socket: the figures above include them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
