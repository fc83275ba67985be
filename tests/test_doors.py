"""Every way in answers through the one answering entry (server/answering.py): a curated answer is served, and
a collection whose review policy is `required` holds the answer, whether the question comes over HTTP,
from `ragkb ask` (in process, or `--server` with a key) or from `ragkb eval qa`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from typer.testing import CliRunner

from eval.qa import evaluate_qa
from ingest.config import Settings, get_settings
from ragkb.cli import app
from server.answering.entry import Answerer, Held
from server.answering.service import QueryService
from server.http.api import create_app
from server.review.desk import Actor

from .browser import LiveServer

runner = CliRunner()
KB = "handbook"
LEAVE = """# Leave policy

Employees get 25 days of paid leave per year.
Unused leave expires on 31 March of the following year.
"""
BACKUP = """# Backups

The nightly backup copies the data directory to the archive server at 02:00.
Backups are kept for 30 days and then deleted.
"""
CURATED_Q = "How many days of paid leave do employees get per year?"
OTHER_Q = "How long are backups kept?"


@dataclass
class Handbook:
    settings: Settings
    docs: Path
    review_id: str  # the approved review behind the curated answer


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def handbook(cli_env: Path, tmp_path: Path) -> Iterator[Handbook]:
    """A collection with review policy `required` and one curated answer (approved by a reviewer)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(LEAVE)
    (docs / "backup.md").write_text(BACKUP)
    code, out, _ = _cli("ingest", str(docs), "-c", KB, "--json")
    assert code == 0, out
    settings = get_settings()
    answerer = Answerer.open(settings)
    try:
        answerer.desk.set_policy(KB, "required", by="admin")
        held = asyncio.run(answerer.answer(answerer.query(CURATED_Q, collection=KB)))
        assert isinstance(held, Held)
        answerer.desk.approve(held.review_id, Actor("reviewer"))
    finally:
        asyncio.run(answerer.aclose())
    yield Handbook(settings, docs, held.review_id)


@pytest.mark.slow
def test_ask_in_process_serves_the_curated_answer_and_reports_a_held_one(handbook: Handbook) -> None:
    code, out, _ = _cli("ask", CURATED_Q, "-c", KB, "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["origin"] == "curated" and "25 days" in data["answer"]
    assert data["curated"]["review_id"] == handbook.review_id

    code, out, err = _cli("ask", OTHER_Q, "-c", KB)
    assert code == 0, out + err
    assert "Held for review" in out
    assert "review id " in err

    code, out, _ = _cli("ask", OTHER_Q, "-c", KB, "--json")
    assert code == 0
    assert json.loads(out)["status"] == "pending"


@pytest.mark.slow
def test_eval_qa_goes_through_the_same_door(handbook: Handbook, tmp_path: Path) -> None:
    questions = tmp_path / "set.jsonl"
    rows = [
        {
            "id": "c1",
            "question": CURATED_Q,
            "answer": "25 days",
            "evidence": [{"source": "leave.md", "heading": "Leave policy"}],
        },
        {
            "id": "h1",
            "question": OTHER_Q,
            "answer": "30 days",
            "evidence": [{"source": "backup.md", "heading": "Backups"}],
        },
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate_qa(QueryService(handbook.settings), questions, [handbook.docs], collection=KB, include=["*.md"])
    origins = {q["id"]: q["origin"] for q in report["questions"]}
    assert origins == {"c1": "curated", "h1": "held"}
    assert report["metrics"]["held"] == 0.5 and report["metrics"]["curated"] == 0.5


@pytest.fixture
def live(handbook: Handbook) -> Iterator[tuple[str, dict[str, str]]]:
    """The real app on a loopback port, with an asker's and a reviewer's key (so keys are required)."""
    tokens = {}
    for name, scope in (("asker", "read"), ("reviewer", "review")):
        code, out, _ = _cli("keys", "create", "--name", name, "--scope", scope, "--all", "--json")
        assert code == 0, out
        tokens[name] = json.loads(out)["token"]
    with LiveServer(create_app(handbook.settings)) as server:
        yield server.url, tokens


@pytest.mark.slow
def test_ask_through_a_server_with_a_key(live: tuple[str, dict[str, str]]) -> None:
    url, tokens = live
    code, out, err = _cli("ask", CURATED_Q, "-c", KB, "--server", url)
    assert code == 1
    assert "--api-key" in out + err  # 401 names the fix

    code, out, _ = _cli("ask", CURATED_Q, "-c", KB, "--server", url, "--api-key", tokens["asker"], "--json")
    assert code == 0, out
    assert json.loads(out)["origin"] == "curated"

    code, out, err = _cli("ask", OTHER_Q, "-c", KB, "--server", url, "--api-key", tokens["asker"])
    assert code == 0, out + err
    assert "Held for review" in out and "review id " in err


@pytest.mark.slow
def test_ask_through_a_server_waits_for_the_reviewer(live: tuple[str, dict[str, str]]) -> None:
    url, tokens = live
    reviewer = {"Authorization": f"Bearer {tokens['reviewer']}"}
    approved: list[str] = []

    def review() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not approved:
            pending = httpx.get(f"{url}/v1/reviews", params={"status": "pending"}, headers=reviewer).json()
            for item in pending["reviews"]:
                if item["question"] == OTHER_Q:
                    httpx.post(f"{url}/v1/reviews/{item['id']}/approve", json={}, headers=reviewer).raise_for_status()
                    approved.append(item["id"])
            time.sleep(0.3)

    thread = threading.Thread(target=review)
    thread.start()
    code, out, _ = _cli(
        "ask", OTHER_Q, "-c", KB, "--server", url, "--api-key", tokens["asker"], "--wait", "30", "--json"
    )
    thread.join()
    assert approved, "the reviewer never saw the held answer"
    assert code == 0, out
    data = json.loads(out)
    assert data["origin"] == "reviewed" and "30 days" in data["answer"]


@pytest.mark.slow
def test_ask_through_a_server_prints_the_answer_and_a_rejection(live: tuple[str, dict[str, str]]) -> None:
    """`--server` goes through `ragkb.client.Client`: the answer and its sources printed as in process; a held
    answer the reviewer rejects while `--wait` runs says so (exit 0)."""
    url, tokens = live
    code, out, err = _cli("ask", CURATED_Q, "-c", KB, "--server", url, "--api-key", tokens["asker"])
    assert code == 0, out + err
    assert "25 days" in out and "[1] " in out and "leave.md" in out
    assert "outcome=answered" in err

    reviewer = {"Authorization": f"Bearer {tokens['reviewer']}"}
    rejected: list[str] = []

    def reject() -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not rejected:
            pending = httpx.get(f"{url}/v1/reviews", params={"status": "pending"}, headers=reviewer).json()
            for item in pending["reviews"]:
                if item["question"] == OTHER_Q:
                    answer = f"{url}/v1/reviews/{item['id']}/reject"
                    httpx.post(answer, json={"note": "not for now"}, headers=reviewer).raise_for_status()
                    rejected.append(item["id"])
            time.sleep(0.3)

    thread = threading.Thread(target=reject)
    thread.start()
    code, out, err = _cli("ask", OTHER_Q, "-c", KB, "--server", url, "--api-key", tokens["asker"], "--wait", "90")
    thread.join()
    assert rejected and code == 0, out + err
    assert "Held for review" not in out and out.strip(), "the rejection is said, not the hold"


def test_ask_through_a_server_that_is_not_ragkb(cli_env: Path) -> None:
    """A web server that answers HTML (a proxy's page, the wrong port) is refused plainly, exit 1."""
    other = FastAPI()
    other.get("/healthz")(lambda: {"status": "ok"})
    other.post("/v1/query")(lambda: HTMLResponse("<html><body>Welcome to nginx!</body></html>"))
    with LiveServer(other) as server:
        code, out, err = _cli("ask", "anything", "--server", server.url)
    assert code == 1 and "without JSON" in out + err
