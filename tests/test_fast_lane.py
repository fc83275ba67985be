"""The cached answer lane (server/http/fastlane.py): a repeated `POST /v1/query` answered before FastAPI's
routing gives exactly the route's answer, keeps access control and rate limits, is counted once, and hands
every request it cannot answer from memory to the route unchanged."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.cache import AnswerCache
from server.answering.service import QueryService
from server.http.api import create_app
from server.state import KeyStore
from server.state.models import AnswerRecord

from .helpers import reader_for

COLLECTION = "lanekb"
OTHER = "lanekb-other"
QUESTION = "How long are deleted files kept?"


@pytest.fixture(scope="module")
def lane_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Ingestor:
    root = tmp_path_factory.mktemp("lane")
    (root / "docs").mkdir()
    (root / "docs" / "retention.md").write_text(
        "# Retention\n\nDeleted files are kept in the trash for thirty days, then removed for good.\n\n"
        "# Sharing\n\nA shared link stops working when its owner leaves the team.\n"
    )
    (root / "other").mkdir()
    (root / "other" / "travel.md").write_text("# Travel\n\nTrain tickets are booked through the office.\n")
    # the store keeps each collection's generation in memory this long (1 s by default): long enough that a
    # loaded machine's slow first answer does not let it lapse before the repeat (see `serving`)
    settings = Settings(data_dir=root / "kb", default_collection=COLLECTION, generation_cache_seconds=60.0)
    ingestor = Ingestor(settings, embedder=embedder)
    assert ingestor.ingest_paths([root / "docs"], collection=COLLECTION).added == 1
    assert ingestor.ingest_paths([root / "other"], collection=OTHER).added == 1
    return ingestor


@contextmanager
def serving(ingestor: Ingestor, tmp_path: Path, name: str = "state", **overrides: Any) -> Iterator[TestClient]:
    """An app over the shared store with its own state database and answer cache. What it keeps in memory
    (generation, policy, curated presence, key identities) is kept 60 s, not 1 s or 5 s, so a loaded machine's
    slow first answer does not let it lapse before the repeat (the lane then rightly hands it to the route)."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / f'{name}.sqlite3'}",
        "cache_url": None,
        "generation_cache_seconds": 60.0,
        "key_cache_seconds": 60.0,
        **overrides,
    }
    settings = ingestor.settings.model_copy(update=values)
    service = QueryService(settings, reader=reader_for(ingestor), cache=_own_cache(settings, tmp_path / name))
    with TestClient(create_app(settings, service)) as client:
        yield client


def _own_cache(settings: Settings, folder: Path) -> AnswerCache:
    folder.mkdir(parents=True, exist_ok=True)
    return AnswerCache.from_settings(settings.model_copy(update={"data_dir": folder}))


def served() -> float:
    return REGISTRY.get_sample_value("ragkb_fast_lane_total", {"result": "served"}) or 0.0


def passed() -> float:
    return REGISTRY.get_sample_value("ragkb_fast_lane_total", {"result": "passed"}) or 0.0


def timed_queries() -> float:
    labels = {"method": "POST", "route": "/v1/query", "status": "200"}
    return REGISTRY.get_sample_value("ragkb_http_request_seconds_count", labels) or 0.0


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between any two requests (their id and how long they took)."""
    out = {k: v for k, v in body.items() if k != "request_id"}
    out["timings"] = {k: v for k, v in body["timings"].items() if k != "total_ms"}
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_repeated_question_is_served_by_the_lane_with_the_routes_own_answer(
    lane_kb: Ingestor, tmp_path: Path
) -> None:
    ask = {"question": QUESTION, "collection": COLLECTION}
    with serving(lane_kb, tmp_path, "route", fast_lane=False) as route:
        route.post("/v1/query", json=ask).raise_for_status()
        before = served()
        by_route = route.post("/v1/query", json=ask, headers={"X-Request-ID": "route-2"})
        assert served() == before  # turned off: the route answered it
    with serving(lane_kb, tmp_path, "lane") as lane:
        first = lane.post("/v1/query", json=ask)
        assert first.status_code == 200 and first.json()["cached"] is False
        before, timed = served(), timed_queries()
        by_lane = lane.post("/v1/query", json=ask, headers={"X-Request-ID": "lane-2"})
        assert served() == before + 1
        # timed under the route's own template, like every request the route answers
        assert timed_queries() == timed + 1
    assert by_lane.status_code == by_route.status_code == 200
    assert by_lane.headers["content-type"] == by_route.headers["content-type"] == "application/json"
    assert by_lane.headers["x-request-id"] == by_lane.json()["request_id"] == "lane-2"
    assert by_lane.json()["cached"] is True and by_lane.json()["citations"]
    assert comparable(by_lane.json()) == comparable(by_route.json())


def test_requests_the_lane_cannot_answer_from_memory_get_the_routes_reply(lane_kb: Ingestor, tmp_path: Path) -> None:
    """The same requests, each after the question's answer is cached, with the lane on and off: the same
    status and the same body."""
    cached = {"question": QUESTION, "collection": COLLECTION}
    requests: list[dict[str, Any]] = [
        {"json": {**cached, "stream": True}},  # streamed: SSE from the route
        {"json": {**cached, "mode": "agent"}},
        {"json": {**cached, "surprise": 1}},  # an unknown field: 422
        {"json": {**cached, "top_k": 0}},  # out of range: 422
        {"json": {**cached, "collection": "no-such-collection"}},  # 404 naming what exists
        {"json": {**cached, "collection": "Bad Name!"}},  # 422
        {"json": {**cached, "retriever": "nope"}},  # 422 naming the retrievers
        {"json": {**cached, "question": "   "}},  # 422
        {"content": b'{"question": ', "headers": {"content-type": "application/json"}},  # broken JSON: 422
        {"content": b'{"question": "How long are deleted files kept?"}', "headers": {"content-type": "text/plain"}},
        {"json": {**cached, "filters": {"source": "retention.md"}}},  # no such filter field: 422
        {"json": {**cached, "filters": {"source_glob": "*retention.md"}}},  # filtered: another question, answered
        # a repeated header is read as the route reads it: the first
        {"json": cached, "headers": [("content-type", "text/plain"), ("content-type", "application/json")]},
    ]

    def replies(client: TestClient) -> list[tuple[int, Any]]:
        client.post("/v1/query", json=cached).raise_for_status()
        client.post("/v1/query", json=cached).raise_for_status()  # now in memory
        out: list[tuple[int, Any]] = []
        for request in requests:
            response = client.post("/v1/query", **request)
            if response.headers["content-type"].startswith("application/json"):
                body = response.json()
                out.append((response.status_code, _untimed(body)))
            else:
                out.append((response.status_code, response.headers["content-type"].split(";")[0]))
        return out

    with serving(lane_kb, tmp_path, "off", fast_lane=False) as route:
        expected = replies(route)
    with serving(lane_kb, tmp_path, "on") as lane:
        before = served()
        got = replies(lane)
        assert served() == before + 1  # the one repeated plain question, nothing else
    assert got == expected
    statuses = [status for status, _ in got]
    assert statuses[0] == 200 and got[0][1] == "text/event-stream"
    assert statuses[2:11] == [422, 422, 404, 422, 422, 422, 422, 422, 422]
    assert statuses[11] == 200 and got[11][1]["citations"][0]["source"] == "docs/retention.md"


def _untimed(value: Any) -> Any:
    """A reply without its request id and every time it reports (answers made afresh take their own time)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in ("request_id", "timings", "ms")}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_the_lane_keeps_access_control(lane_kb: Ingestor, tmp_path: Path) -> None:
    ask = {"question": QUESTION, "collection": COLLECTION}
    with serving(lane_kb, tmp_path) as client:
        keys: KeyStore = client.app.state.components.keys  # type: ignore[attr-defined]
        _, reader = keys.create("reader", "read", [COLLECTION])
        _, elsewhere = keys.create("elsewhere", "read", [OTHER])
        for _ in range(2):  # cached, and the key's identity kept in memory
            assert client.post("/v1/query", json=ask, headers=bearer(reader)).status_code == 200
        before = served()
        assert client.post("/v1/query", json=ask, headers=bearer(reader)).status_code == 200
        assert served() == before + 1
        nobody = client.post("/v1/query", json=ask)
        assert nobody.status_code == 401 and nobody.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/query", json=ask, headers=bearer("rk_" + "x" * 43))
        assert wrong.status_code == 401 and "answer" not in wrong.json()
        basic = client.post("/v1/query", json=ask, headers={"Authorization": f"Basic {reader}"})
        assert basic.status_code == 401
        # two Authorization headers: the first is the one that counts, for the lane as for the route
        bad_first = [("Authorization", f"Bearer rk_{'x' * 43}"), ("Authorization", f"Bearer {reader}")]
        assert client.post("/v1/query", json=ask, headers=bad_first).status_code == 401
        other_first = [("Authorization", f"Bearer {elsewhere}"), ("Authorization", f"Bearer {reader}")]
        assert client.post("/v1/query", json=ask, headers=other_first).status_code == 404
        hidden = client.post("/v1/query", json=ask, headers=bearer(elsewhere))  # may not see it: as if missing
        assert hidden.status_code == 404 and hidden.json()["code"] == "collection_not_found"
        assert hidden.json()["error"] == f"collection {COLLECTION!r} does not exist (available: {OTHER})"
        assert served() == before + 1  # none of the refused ones was answered by the lane


def test_a_request_the_lane_hands_on_is_rate_limited_once(lane_kb: Ingestor, tmp_path: Path) -> None:
    """burst 2: a new question (the lane admits it, the route answers it) and its repeat (the lane answers
    it) take one token each, so the third request is the one refused."""
    ask = {"question": QUESTION, "collection": COLLECTION}
    with serving(lane_kb, tmp_path, rate_limit_burst=2, rate_limit_per_minute=1) as client:
        before_passed, before_served = passed(), served()
        assert client.post("/v1/query", json=ask).status_code == 200
        assert client.post("/v1/query", json=ask).status_code == 200
        assert (passed() - before_passed, served() - before_served) == (1, 1)
        limited = client.post("/v1/query", json=ask)
        assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1


def test_a_review_policy_set_after_caching_holds_the_next_answer(lane_kb: Ingestor, tmp_path: Path) -> None:
    ask = {"question": QUESTION, "collection": COLLECTION}
    with serving(lane_kb, tmp_path) as client:
        for _ in range(2):
            assert client.post("/v1/query", json=ask).status_code == 200
        put = client.put(f"/v1/collections/{COLLECTION}/review-policy", json={"review": "required"})
        assert put.status_code == 200
        before = served()
        held = client.post("/v1/query", json=ask)
        assert held.status_code == 202 and held.json()["answer_url"].startswith("/v1/answers/")
        assert served() == before


def test_a_served_app_freezes_its_start_up_heap_and_thaws_it_at_shutdown(lane_kb: Ingestor, tmp_path: Path) -> None:
    """`ragkb serve`'s app moves what it holds once started out of the collections (heap.py): a full
    collection then walks only what requests made. An app embedded in a process (as here) by default does not,
    and the served one gives everything back at shutdown, so nothing it held stays pinned."""
    gc.unfreeze()
    with serving(lane_kb, tmp_path, "plain"):
        assert gc.get_freeze_count() == 0
    settings = lane_kb.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'served.sqlite3'}", "cache_url": None}
    )
    service = QueryService(settings, reader=reader_for(lane_kb), cache=_own_cache(settings, tmp_path / "served"))
    with TestClient(create_app(settings, service, freeze_heap=True)) as client:
        frozen = gc.get_freeze_count()
        assert client.get("/healthz").status_code == 200
    assert frozen > 100_000  # the embedding model alone is far more
    assert gc.get_freeze_count() == 0


def test_every_answer_is_recorded_once_whichever_way_it_was_served(lane_kb: Ingestor, tmp_path: Path) -> None:
    ask = {"question": QUESTION, "collection": COLLECTION}
    with serving(lane_kb, tmp_path) as client:
        before = served()
        ids = [client.post("/v1/query", json=ask).json()["request_id"] for _ in range(3)]
        assert served() == before + 2 and len(set(ids)) == 3
        desk = client.app.state.components.desk  # type: ignore[attr-defined]
        desk.flush()
        records = [desk.store.answer(request_id) for request_id in ids]
        assert all(r is not None and r.question == QUESTION and r.origin == "cached" for r in records[1:])
        with desk.store.db.session() as session:
            assert session.query(AnswerRecord).count() == 3
