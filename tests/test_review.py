"""Human review on real components (Chroma, the packaged model, the state database on SQLite and
PostgreSQL): feedback, the `required` and `flagged` policies, approve (as is or edited, validated),
reject for good or retry (up to the limit), curated answers served and withdrawn, concurrent decisions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.service import QueryService
from server.http.api import create_app
from server.state import Scope

from .conftest import ENGINES, fresh_database_url
from .helpers import reader_for

KB = "handbook"
LEAVE = """# Leave policy

Employees get 25 days of paid leave per year.
Unused leave expires on 31 March of the following year.

## Sick leave

Sick leave needs a doctor's note after three days of absence.
"""
BACKUP = """# Backups

The nightly backup copies the data directory to the archive server at 02:00.
Backups are kept for 30 days and then deleted.
"""
QUESTION = "How many days of paid leave do employees get per year?"


@dataclass
class Desk:
    client: TestClient
    ingestor: Ingestor
    docs: Path
    tokens: dict[str, str]

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def ask(self, question: str = QUESTION, who: str = "asker", **body: Any) -> httpx.Response:
        return self.call(who, "POST", "/v1/query", json={"question": question, "collection": KB, **body})

    def policy(self, review: str) -> None:
        response = self.call("admin", "PUT", f"/v1/collections/{KB}/review-policy", json={"review": review})
        assert response.status_code == 200, response.text


# PostgreSQL runs the same tests in the full suite; the quick loop keeps SQLite
ENGINE_PARAMS = [pytest.param(e, marks=pytest.mark.slow) if e == "postgresql" else e for e in ENGINES]


@pytest.fixture(params=ENGINE_PARAMS)
def desk(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> Iterator[Desk]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(LEAVE)
    (docs / "backup.md").write_text(BACKUP)
    with fresh_database_url(request.param, tmp_path) as url:
        settings = Settings(
            data_dir=tmp_path / "kb",
            database_url=url,
            rate_limit_burst=1_000_000,
            rate_limit_per_minute=1_000_000,
            review_max_attempts=3,
            **(marker.kwargs if (marker := request.node.get_closest_marker("settings")) else {}),
        )
        ingestor = Ingestor(settings, embedder=embedder)
        assert ingestor.ingest_paths([docs], collection=KB).added == 2
        service = QueryService(settings, reader=reader_for(ingestor))
        with TestClient(create_app(settings, service)) as client:
            keys = client.app.state.components.keys  # type: ignore[attr-defined]
            tokens = {
                "asker": keys.create("asker", Scope.READ, None)[1],
                "reviewer": keys.create("reviewer", Scope.REVIEW, None)[1],
                "admin": keys.create("root", Scope.ADMIN, None)[1],
                "outsider": keys.create("outsider", Scope.REVIEW, ["elsewhere"])[1],
            }
            yield Desk(client, ingestor, docs, tokens)


def pending(desk: Desk) -> list[dict[str, Any]]:
    response = desk.call("reviewer", "GET", "/v1/reviews?status=pending")
    assert response.status_code == 200, response.text
    reviews: list[dict[str, Any]] = response.json()["reviews"]
    return reviews


@pytest.mark.slow
def test_required_review_full_loop(desk: Desk) -> None:
    """Held (202) -> a reviewer approves an edited answer -> the asker gets it -> the same question is
    answered from the curated answer -> re-ingesting the cited source withdraws it and queues the question."""
    desk.policy("required")
    held = desk.ask()
    assert held.status_code == 202, held.text
    review_id = held.json()["review_id"]
    assert held.json()["status"] == "pending"
    outcome = desk.call("asker", "GET", f"/v1/answers/{review_id}").json()
    assert outcome["status"] == "pending" and outcome["answer"] is None

    queue = pending(desk)
    assert [r["id"] for r in queue] == [review_id]
    assert queue[0]["reasons"] == ["required"] and queue[0]["held"] is True
    assert queue[0]["confidence"] > 0
    detail = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()
    assert detail["question"] == QUESTION
    leave = [p for p in detail["context"] if p["source"].endswith("leave.md")]
    assert leave, detail["context"]
    n = leave[0]["n"]
    assert "25 days of paid leave" in leave[0]["text"]

    edited = f"Employees get 25 days of paid leave per year [{n}]."
    approved = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={"answer": edited})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["decided_by"] == "reviewer"

    outcome = desk.call("asker", "GET", f"/v1/answers/{review_id}").json()
    assert outcome["status"] == "approved"
    answer = outcome["answer"]
    assert answer["answer"] == edited and answer["origin"] == "reviewed"
    assert answer["curated"]["reviewer"] == "reviewer"
    assert answer["citations"][0]["source"].endswith("leave.md")

    again = desk.ask("how many days of paid leave do employees get per year")  # same normalised question
    assert again.status_code == 200, again.text
    assert again.json()["origin"] == "curated" and again.json()["answer"] == edited
    assert again.json()["curated"]["match"] == "exact"

    (desk.docs / "leave.md").write_text(LEAVE.replace("25 days", "27 days"))
    assert desk.ingestor.ingest_paths([desk.docs], collection=KB).updated == 1
    after = desk.ask()
    assert after.status_code == 202, after.text  # not served stale: held for a new review
    requeued = [r for r in pending(desk) if r["id"] == after.json()["review_id"]]
    assert requeued and requeued[0]["reasons"] == ["required", "source_changed"]

    audit = desk.call("admin", "GET", "/v1/audit?limit=50").json()
    actions = [event["action"] for event in audit]
    assert "review.approve" in actions and actions.count("review.queue") == 2

    metrics = desk.client.get("/metrics").text
    assert 'ragkb_review_decisions_total{decision="edited"}' in metrics
    assert 'ragkb_curated_answers_total{event="withdrawn"}' in metrics


@pytest.mark.slow
@pytest.mark.settings(curated_match_threshold=0.8)
def test_similar_questions_share_a_curated_answer_only_when_they_ask_the_same(desk: Desk) -> None:
    """With RAGKB_CURATED_MATCH_THRESHOLD set, a close rewording is served the curated answer; a near miss
    (same words, one swapped) is not, whatever its cosine (eval/curated_match.py measures both)."""
    desk.policy("required")
    review_id = desk.ask().json()["review_id"]
    context = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()["context"]
    n = next(p["n"] for p in context if p["source"].endswith("leave.md"))
    edited = f"25 days a year [{n}]."
    assert desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={"answer": edited}).is_success

    reworded = desk.ask("How many paid leave days do employees get each year?")
    assert reworded.status_code == 200, reworded.text
    assert reworded.json()["origin"] == "curated" and reworded.json()["answer"] == edited
    assert reworded.json()["curated"]["match"] == "similar" and reworded.json()["curated"]["similarity"] >= 0.8
    near_miss = desk.ask("How many days of sick leave do employees get per year?")
    assert near_miss.status_code == 202  # answered afresh, and held for review like any new answer


@pytest.mark.slow
def test_flagged_feedback_and_validation_of_feedback(desk: Desk) -> None:
    desk.policy("flagged")
    answered = desk.ask()
    assert answered.status_code == 200 and answered.json()["origin"] == "generated"
    request_id = answered.json()["request_id"]
    citations = answered.json()["citations"]
    assert citations

    feedback = {"request_id": request_id, "rating": "down", "comment": "Wrong year.", "citations": []}
    first = desk.call("asker", "POST", "/v1/feedback", json={**feedback, "citations": [{"n": 1, "verdict": "wrong"}]})
    assert first.status_code == 201, first.text
    assert first.json()["review_id"]  # thumbs down on a flagged collection queues the answer
    assert [r["reasons"] for r in pending(desk)] == [["thumbs_down"]]
    second = desk.call("asker", "POST", "/v1/feedback", json=feedback)
    assert second.status_code == 201 and second.json()["review_id"] is None  # already queued: not twice

    unknown = desk.call("asker", "POST", "/v1/feedback", json={**feedback, "request_id": "not-a-request"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "answer_not_found"
    out_of_range = desk.call(
        "asker", "POST", "/v1/feedback", json={**feedback, "citations": [{"n": 9, "verdict": "wrong"}]}
    )
    assert out_of_range.status_code == 422 and out_of_range.json()["code"] == "invalid_feedback"
    bad_rating = desk.call("asker", "POST", "/v1/feedback", json={**feedback, "rating": "meh"})
    assert bad_rating.status_code == 422
    hidden = desk.call("outsider", "POST", "/v1/feedback", json=feedback)
    assert hidden.status_code == 404  # a key that may not see the collection learns nothing

    missing = desk.call("asker", "GET", "/v1/collections/no-such-kb/review-policy")
    assert missing.status_code == 404 and missing.json()["code"] == "collection_not_found"
    abstained = desk.ask("What is the capital of France?")
    assert abstained.status_code == 200 and abstained.json()["abstained"] is True
    reasons = [r["reasons"] for r in pending(desk)]
    assert ["abstained"] in reasons  # flagged: abstentions are queued after they are answered


@pytest.mark.slow
def test_reject_retry_until_the_limit_then_reject(desk: Desk) -> None:
    desk.policy("required")
    review_id = desk.ask().json()["review_id"]
    for attempt in (2, 3):
        retried = desk.call(
            "reviewer", "POST", f"/v1/reviews/{review_id}/reject", json={"retry": True, "note": "Quote the number."}
        )
        assert retried.status_code == 200, retried.text
        history = retried.json()["history"]
        assert len(history) == attempt and history[-1]["note"] == "Quote the number."
        assert history[-1]["strategy"].startswith("retry:") and history[-1]["prompt"] == "answer-retry:1"
        assert retried.json()["status"] == "pending"
    assert "retriever=dense" in history[1]["strategy"]  # the other retriever on the second attempt
    limited = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/reject", json={"retry": True})
    assert limited.status_code == 409 and limited.json()["code"] == "retry_limit_reached"
    assert "RAGKB_REVIEW_MAX_ATTEMPTS=3" in limited.json()["error"]

    rejected = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/reject", json={"retry": False, "note": "No."})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    outcome = desk.call("asker", "GET", f"/v1/answers/{review_id}").json()
    assert outcome["status"] == "rejected" and outcome["answer"] is None and "declined" in outcome["message"]
    again = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={})
    assert again.status_code == 409 and again.json()["code"] == "review_decided"


@pytest.mark.slow
def test_approval_is_validated(desk: Desk) -> None:
    desk.policy("required")
    review_id = desk.ask().json()["review_id"]
    context = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()["context"]
    approve = f"/v1/reviews/{review_id}/approve"

    too_far = desk.call("reviewer", "POST", approve, json={"answer": f"Twenty-five days [{len(context) + 1}]."})
    assert too_far.status_code == 422 and too_far.json()["code"] == "invalid_review_answer"
    assert f"[{len(context)}] (extra_chunks follow from [{len(context) + 1}])" in too_far.json()["error"]
    empty = desk.call("reviewer", "POST", approve, json={"answer": "   "})
    assert empty.status_code == 422 and "empty" in empty.json()["error"]
    uncited = desk.call("reviewer", "POST", approve, json={"answer": "Twenty-five days."})
    assert uncited.status_code == 422 and "cites no passage" in uncited.json()["error"]
    unknown_chunk = desk.call("reviewer", "POST", approve, json={"answer": "Yes [1].", "extra_chunks": ["nope:v:0"]})
    assert unknown_chunk.status_code == 409 and unknown_chunk.json()["code"] == "stale_chunk"
    not_reviewer = desk.call("asker", "POST", approve, json={})
    assert not_reviewer.status_code == 403
    hidden = desk.call("outsider", "GET", f"/v1/reviews/{review_id}")
    assert hidden.status_code == 404 and hidden.json()["code"] == "review_not_found"

    backup = next(p for p in context if p["source"].endswith("backup.md"))
    desk.call("admin", "DELETE", f"/v1/collections/{KB}/documents/{backup['document_id']}")
    gone = desk.call("reviewer", "POST", approve, json={"answer": f"Backups are kept for 30 days [{backup['n']}]."})
    assert gone.status_code == 409 and gone.json()["code"] == "stale_chunk"
    assert "no longer exists" in gone.json()["error"]
    assert pending(desk)[0]["id"] == review_id  # nothing was decided by the refused approvals

    # a chunk the reviewer adds by id is cited as n = len(context) + 1
    leave = next(p for p in context if p["source"].endswith("leave.md"))
    extra = desk.call(
        "reviewer",
        "POST",
        approve,
        json={"answer": f"25 days a year [{len(context) + 1}].", "extra_chunks": [leave["chunk_id"]]},
    )
    assert extra.status_code == 200, extra.text
    assert extra.json()["final_answer"] == f"25 days a year [{len(context) + 1}]."


@pytest.mark.slow
def test_concurrent_approvals_are_decided_once(desk: Desk) -> None:
    desk.policy("required")
    review_id = desk.ask().json()["review_id"]
    context = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()["context"]
    n = next(p["n"] for p in context if p["source"].endswith("leave.md"))
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def approve() -> None:
        barrier.wait()
        response = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={"answer": f"25 days [{n}]."})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=approve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    curated = desk.ask()
    assert curated.json()["origin"] == "curated"  # one curated answer, served


@pytest.mark.slow
def test_waiting_asker_gets_the_decision_as_server_sent_events(desk: Desk) -> None:
    desk.policy("required")
    held = desk.ask(stream=True)  # held answers are never streamed: 202 with where to wait
    assert held.status_code == 202 and held.headers["content-type"].startswith("application/json")
    review_id = held.json()["review_id"]
    events: list[str] = []
    listening = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {desk.tokens['asker']}"}
        with desk.client.stream("GET", held.json()["events_url"], headers=headers) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                    listening.set()

    thread = threading.Thread(target=listen)
    thread.start()
    assert listening.wait(30)
    context = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()["context"]
    n = next(p["n"] for p in context if p["source"].endswith("leave.md"))
    assert desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={"answer": f"25 [{n}]."}).is_success
    thread.join(30)
    assert not thread.is_alive()
    assert '"status": "pending"' in events[0]
    assert '"status": "approved"' in events[-1] and f"25 [{n}]." in events[-1]


@pytest.mark.slow
def test_review_feedback_and_policy_through_the_cli(cli_env: Path, tmp_path: Path) -> None:
    """`ragkb collections set`, `ragkb review list/show/approve/reject`, `ragkb feedback list/export`."""
    import json

    from typer.testing import CliRunner

    from ingest.config import get_settings
    from ragkb.cli import app

    runner = CliRunner()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(LEAVE)
    (docs / "backup.md").write_text(BACKUP)
    assert runner.invoke(app, ["ingest", str(docs), "--collection", KB]).exit_code == 0
    unknown = runner.invoke(app, ["collections", "set", "nope-kb", "--review", "required"])
    assert unknown.exit_code == 2 and "no collection 'nope-kb'" in unknown.output
    bad = runner.invoke(app, ["collections", "set", KB, "--review", "sometimes"])
    assert bad.exit_code == 2 and "use one of off, flagged, required" in bad.output
    assert runner.invoke(app, ["collections", "set", KB, "--review", "required"]).exit_code == 0
    assert "handbook: review required" in runner.invoke(app, ["collections", "show"]).output

    with TestClient(create_app(get_settings())) as client:
        held = [client.post("/v1/query", json={"question": q, "collection": KB}) for q in (QUESTION, "Backups?")]
    assert [r.status_code for r in held] == [202, 202]
    first, second = (r.json()["review_id"] for r in held)

    listed = json.loads(runner.invoke(app, ["review", "list", "--json"]).stdout)
    assert [r["id"] for r in listed] == [first, second]
    shown = json.loads(runner.invoke(app, ["review", "show", first, "--json"]).stdout)
    n = next(p["n"] for p in shown["context"] if p["source"].endswith("leave.md"))
    assert "25 days of paid leave" in runner.invoke(app, ["review", "show", first]).output
    missing = runner.invoke(app, ["review", "show", "nope"])
    assert missing.exit_code == 2 and "ragkb review list" in missing.output

    answer_file = tmp_path / "answer.txt"
    answer_file.write_text(f"25 days a year [{n}].")
    approved = runner.invoke(app, ["review", "approve", first, "--answer-file", str(answer_file)])
    assert approved.exit_code == 0, approved.output
    rejected = runner.invoke(app, ["review", "reject", second, "--note", "Too vague."])
    assert rejected.exit_code == 0, rejected.output
    again = runner.invoke(app, ["review", "reject", second])
    assert again.exit_code == 2 and "already rejected" in again.output
    assert json.loads(runner.invoke(app, ["review", "list", "--json"]).stdout) == []

    with TestClient(create_app(get_settings())) as client:
        curated = client.post("/v1/query", json={"question": QUESTION, "collection": KB}).json()
        assert curated["origin"] == "curated" and curated["answer"] == f"25 days a year [{n}]."
        given = client.post(
            "/v1/feedback", json={"request_id": curated["request_id"], "rating": "up", "comment": "Exactly right."}
        )
        assert given.status_code == 201, given.text
    exported = tmp_path / "feedback.jsonl"
    assert runner.invoke(app, ["feedback", "export", "--output", str(exported)]).exit_code == 0
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["rating"] == "up" and rows[0]["origin"] == "curated"
    assert rows[0]["question"] == QUESTION and rows[0]["citations"][0]["n"] == n
    listed_feedback = runner.invoke(app, ["feedback", "list", "--json"]).stdout
    assert json.loads(listed_feedback)[0]["comment"] == "Exactly right."


@pytest.mark.slow
def test_agent_mode_answers_are_recorded_for_feedback(desk: Desk) -> None:
    answered = desk.ask(mode="agent")
    assert answered.status_code == 200, answered.text
    assert answered.json()["steps"]
    given = desk.call(
        "asker", "POST", "/v1/feedback", json={"request_id": answered.json()["request_id"], "rating": "up"}
    )
    assert given.status_code == 201, given.text
    desk.policy("flagged")
    abstained = desk.ask("What is the capital of France?", mode="agent")
    assert abstained.status_code == 200 and abstained.json()["abstained"] is True
    assert [r["reasons"] for r in pending(desk)] == [["abstained"]]  # flagged applies to agent answers too
    desk.policy("required")
    held = desk.ask(mode="agent")  # agent mode never bypasses review
    assert held.status_code == 202


@pytest.mark.slow
def test_candidates_keep_their_numbers_whatever_their_origin(desk: Desk) -> None:
    """A cached candidate (context = its citations, numbered as cited) and a thumbs-down review approve as they
    are; an approval of a candidate older than the newest is refused."""
    desk.policy("required")
    first = desk.ask().json()["review_id"]
    second = desk.ask().json()["review_id"]  # the same question again: the answer comes from the cache
    detail = desk.call("reviewer", "GET", f"/v1/reviews/{second}").json()
    assert detail["citations"] and [p["n"] for p in detail["context"]] == [c["n"] for c in detail["citations"]]
    approved = desk.call("reviewer", "POST", f"/v1/reviews/{second}/approve", json={"attempt": 1})
    assert approved.status_code == 200, approved.text
    assert approved.json()["final_answer"] == detail["answer"]

    retried = desk.call("reviewer", "POST", f"/v1/reviews/{first}/reject", json={"retry": True})
    assert retried.status_code == 200
    stale = desk.call("reviewer", "POST", f"/v1/reviews/{first}/approve", json={"attempt": 1})
    assert stale.status_code == 409 and "newer candidate (2)" in stale.json()["error"]

    desk.policy("flagged")
    shown = desk.ask("How long are backups kept?").json()
    down = desk.call("asker", "POST", "/v1/feedback", json={"request_id": shown["request_id"], "rating": "down"})
    review_id = down.json()["review_id"]
    as_shown = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={})
    assert as_shown.status_code == 200, as_shown.text
    assert as_shown.json()["final_answer"] == shown["answer"]


@pytest.mark.slow
def test_a_request_id_cannot_overwrite_another_callers_answer(desk: Desk) -> None:
    mine = desk.call(
        "asker",
        "POST",
        "/v1/query",
        json={"question": QUESTION, "collection": KB},
        headers={"X-Request-ID": "shared-id-1"},
    )
    assert mine.status_code == 200 and mine.json()["request_id"] == "shared-id-1"
    other = desk.call(
        "admin",
        "POST",
        "/v1/query",
        json={"question": "How long are backups kept?", "collection": KB},
        headers={"X-Request-ID": "shared-id-1"},
    )
    assert other.status_code == 200
    server_desk = desk.client.app.state.components.desk  # type: ignore[attr-defined]
    server_desk.flush()  # the records are written behind the responses
    exported = server_desk.store.answer("shared-id-1")
    assert exported.question == QUESTION and exported.key_name == "asker"


@pytest.mark.slow
@pytest.mark.settings(answer_wait_seconds=1)
def test_waiting_ends_with_a_timeout_event_when_nobody_decides(desk: Desk) -> None:
    desk.policy("required")
    held = desk.ask().json()
    with desk.client.stream(
        "GET", held["events_url"], headers={"Authorization": f"Bearer {desk.tokens['asker']}"}
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("event: ")]
    assert events == ["event: status", "event: timeout"]


@pytest.mark.slow
def test_concurrent_retries_never_pass_the_limit(desk: Desk) -> None:
    desk.policy("required")
    review_id = desk.ask().json()["review_id"]
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def retry() -> None:
        barrier.wait()
        response = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/reject", json={"retry": True})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 409, 409]  # 1 candidate + 2 retries = RAGKB_REVIEW_MAX_ATTEMPTS
    history = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()["history"]
    assert [a["n"] for a in history] == [1, 2, 3]


@pytest.mark.slow
def test_a_rejected_curated_answer_is_withdrawn(desk: Desk) -> None:
    desk.policy("flagged")
    shown = desk.ask().json()
    down = desk.call("asker", "POST", "/v1/feedback", json={"request_id": shown["request_id"], "rating": "down"})
    assert desk.call("reviewer", "POST", f"/v1/reviews/{down.json()['review_id']}/approve", json={}).is_success
    curated = desk.ask().json()
    assert curated["origin"] == "curated"
    down = desk.call("asker", "POST", "/v1/feedback", json={"request_id": curated["request_id"], "rating": "down"})
    rejected = desk.call("reviewer", "POST", f"/v1/reviews/{down.json()['review_id']}/reject", json={"note": "Old."})
    assert rejected.status_code == 200
    assert desk.ask().json()["origin"] != "curated"  # withdrawn: answered afresh


def _approve_edited(desk: Desk, answer: str = "Employees get 25 days of paid leave per year [{n}].") -> str:
    """Hold the question (policy `required`), approve an edited answer citing leave.md; the answer approved."""
    desk.policy("required")
    review_id = desk.ask().json()["review_id"]
    context = desk.call("reviewer", "GET", f"/v1/reviews/{review_id}").json()["context"]
    n = next(p["n"] for p in context if p["source"].endswith("leave.md"))
    edited = answer.format(n=n)
    approved = desk.call("reviewer", "POST", f"/v1/reviews/{review_id}/approve", json={"answer": edited})
    assert approved.status_code == 200, approved.text
    assert desk.ask().json()["origin"] == "curated"
    return edited


@pytest.mark.slow
def test_a_reviewer_lists_and_withdraws_a_curated_answer(desk: Desk) -> None:
    """approve -> listed -> withdrawn by hand -> the question is held again -> 409 twice, 404 unknown; keys
    limited to another collection see nothing and withdraw nothing, read keys are refused."""
    edited = _approve_edited(desk)
    listed = desk.call("reviewer", "GET", "/v1/curated")
    assert listed.status_code == 200, listed.text
    [entry] = listed.json()["curated"]
    assert entry["question"] == QUESTION and entry["answer"] == edited and entry["collection"] == KB
    assert entry["status"] == "active" and entry["withdrawn_at"] is None and entry["reviewer"] == "reviewer"
    assert entry["review_id"] and entry["approved_at"]
    cited = entry["citations"][0]
    assert cited["source"].endswith("leave.md") and cited["chunk_id"] and cited["text_hash"]
    assert desk.call("reviewer", "GET", f"/v1/curated/{entry['id']}").json() == entry
    assert desk.call("admin", "GET", f"/v1/curated?collection={KB}").json()["curated"] == [entry]

    # a review key limited to another collection: nothing to see, nothing to withdraw; a read key: refused
    assert desk.call("outsider", "GET", "/v1/curated?status=all").json() == {"curated": []}
    assert desk.call("outsider", "GET", f"/v1/curated?collection={KB}").json() == {"curated": []}
    for method in ("GET", "DELETE"):
        hidden = desk.call("outsider", method, f"/v1/curated/{entry['id']}")
        assert hidden.status_code == 404 and hidden.json()["code"] == "curated_not_found"
        refused = desk.call("asker", method, f"/v1/curated/{entry['id']}")
        assert refused.status_code == 403
    assert desk.call("asker", "GET", "/v1/curated").status_code == 403
    assert desk.call("reviewer", "GET", f"/v1/curated/{entry['id']}").json()["status"] == "active"

    withdrawn = desk.call("reviewer", "DELETE", f"/v1/curated/{entry['id']}")
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn" and withdrawn.json()["withdrawn_at"]
    after = desk.ask()
    assert after.status_code == 202, after.text  # no longer answered from it: held for a review again
    again = desk.call("reviewer", "DELETE", f"/v1/curated/{entry['id']}")
    assert again.status_code == 409 and again.json()["code"] == "curated_withdrawn"
    for method in ("GET", "DELETE"):
        unknown = desk.call("reviewer", method, "/v1/curated/987654")
        assert unknown.status_code == 404 and unknown.json()["code"] == "curated_not_found"

    assert desk.call("reviewer", "GET", "/v1/curated").json() == {"curated": []}
    [gone] = desk.call("reviewer", "GET", "/v1/curated?status=withdrawn").json()["curated"]
    assert gone["id"] == entry["id"] and gone["withdrawn_at"] == withdrawn.json()["withdrawn_at"]
    assert [c["id"] for c in desk.call("reviewer", "GET", "/v1/curated?status=all").json()["curated"]] == [entry["id"]]
    assert desk.call("reviewer", "GET", "/v1/curated?status=retired").status_code == 422

    audit = desk.call("admin", "GET", "/v1/audit?action=curated.withdraw").json()
    assert len(audit) == 1 and audit[0]["key_name"] == "reviewer" and audit[0]["collection"] == KB
    assert audit[0]["detail"]["curated_id"] == entry["id"] and audit[0]["detail"]["review_id"] == entry["review_id"]
    assert 'ragkb_curated_answers_total{event="withdrawn"}' in desk.client.get("/metrics").text


@pytest.mark.slow
def test_curated_answers_listed_and_withdrawn_through_the_cli(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ragkb review curated [--status] [--json]` and `ragkb review withdraw ID` on the server's state database."""
    import json

    from typer.testing import CliRunner

    from ingest.config import get_settings
    from ragkb.cli import app

    settings = desk.client.app.state.components.desk.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("RAGKB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAGKB_DATABASE_URL", str(settings.database_url))
    get_settings.cache_clear()
    try:
        edited = _approve_edited(desk)
        runner = CliRunner()
        listed = runner.invoke(app, ["review", "curated", "--json"])
        assert listed.exit_code == 0, listed.output
        [entry] = json.loads(listed.stdout)
        assert entry["answer"] == edited and entry["status"] == "active"
        assert json.loads(runner.invoke(app, ["review", "curated", "--collection", "elsewhere", "--json"]).stdout) == []
        table = runner.invoke(app, ["review", "curated"])
        assert table.exit_code == 0 and KB in table.output and "active" in table.output
        bad = runner.invoke(app, ["review", "curated", "--status", "retired"])
        assert bad.exit_code == 2 and "use one of active, withdrawn, all" in bad.output

        withdrawn = runner.invoke(app, ["review", "withdraw", str(entry["id"])])
        assert withdrawn.exit_code == 0, withdrawn.output
        assert f"withdrew curated answer {entry['id']}" in withdrawn.output
        again = runner.invoke(app, ["review", "withdraw", str(entry["id"])])
        assert again.exit_code == 2 and "already withdrawn" in again.output
        unknown = runner.invoke(app, ["review", "withdraw", "987654"])
        assert unknown.exit_code == 2 and "ragkb review curated" in unknown.output

        assert json.loads(runner.invoke(app, ["review", "curated", "--json"]).stdout) == []
        [gone] = json.loads(runner.invoke(app, ["review", "curated", "--status", "withdrawn", "--json"]).stdout)
        assert gone["id"] == entry["id"] and gone["withdrawn_at"]
        assert desk.ask().status_code == 202  # the server no longer serves it
        audit = desk.call("admin", "GET", "/v1/audit?action=curated.withdraw").json()
        assert len(audit) == 1 and audit[0]["key_name"] is None  # the local operator
    finally:
        get_settings.cache_clear()
