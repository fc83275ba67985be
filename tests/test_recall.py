"""A fast-path hit's objects made once (server/answering/recall.py): each request gets its own copy with its
own id and time, a new cached value is never answered with the old one's objects, and a value other than
the kept one is built as before."""

from __future__ import annotations

from typing import Any

from server.answering.citations import ValidatedAnswer
from server.answering.recall import Recall
from server.schemas import Citation, PromptInfo, QueryResponse, Timings

MEMO = "memo-key"


def hit(answer: str) -> dict[str, Any]:
    citation = {
        "n": 1, "chunk_id": "c1", "document_id": "d1", "source": "guide.md", "title": "Guide",
        "start": 0, "end": 40, "score": 0.9, "snippet": "Deleted files are kept",
    }  # fmt: skip
    return {"answer": answer, "citations": [citation]}


def validated_of(value: dict[str, Any]) -> ValidatedAnswer:
    return ValidatedAnswer(value["answer"], [Citation(**c) for c in value["citations"]], [], grounded=True)


def response_of(validated: ValidatedAnswer, request_id: str) -> QueryResponse:
    return QueryResponse(
        answer=validated.text,
        citations=validated.citations,
        grounded=True,
        cached=True,
        model="extractive",
        provider="extractive",
        prompt=PromptInfo(name="answer", version="1"),
        timings=Timings(retrieve_ms=0.0, llm_ms=0.0, total_ms=0.5),
        request_id=request_id,
        collection="kb",
        retriever="hybrid",
    )


def test_a_kept_answer_is_built_once_and_each_request_gets_its_own_id_and_time() -> None:
    recall, value, built = Recall(limit=8), hit("Thirty days [1]."), []

    def build(value: dict[str, Any]) -> ValidatedAnswer:
        built.append(value)
        return validated_of(value)

    first = recall.validated(MEMO, value, build)
    assert recall.validated(MEMO, value, build) is first and len(built) == 1
    made: list[str] = []

    def respond(request_id: str) -> QueryResponse:
        return recall.response(
            MEMO, first, lambda: made.append(request_id) or response_of(first, request_id), request_id=request_id,
            total_ms=1.25,
        )  # fmt: skip

    one, two = respond("req-1"), respond("req-2")
    assert made == ["req-1"]  # the second request copied the first's response
    assert (one.request_id, two.request_id) == ("req-1", "req-2")
    assert one.timings == two.timings == Timings(retrieve_ms=0.0, llm_ms=0.0, total_ms=1.25)
    assert one is not two and one.model_dump(exclude={"request_id"}) == two.model_dump(exclude={"request_id"})
    assert (
        two.model_dump_json()
        == response_of(first, "req-2").model_copy(update={"timings": two.timings}).model_dump_json()
    )


def test_a_new_cached_value_is_never_answered_with_the_old_ones_objects() -> None:
    recall = Recall(limit=8)
    old = recall.validated(MEMO, hit("Thirty days [1]."), validated_of)
    recall.response(MEMO, old, lambda: response_of(old, "req-1"), request_id="req-1", total_ms=1.0)
    new = recall.validated(MEMO, hit("Sixty days [1]."), validated_of)  # e.g. read again after a cache clear
    assert new is not old and new.text == "Sixty days [1]."
    reply = recall.response(MEMO, new, lambda: response_of(new, "req-2"), request_id="req-2", total_ms=1.0)
    assert reply.answer == "Sixty days [1]." and reply.request_id == "req-2"
    # a validated answer that is not the kept one (found by another way) is built as before, every time
    stray = validated_of(hit("Thirty days [1]."))
    built = [recall.response(MEMO, stray, lambda: response_of(stray, "r"), request_id="r", total_ms=1.0) for _ in "ab"]
    assert built[0] is not built[1] and built[0].timings.total_ms == 0.5  # build()'s own, not a copy


def test_it_keeps_at_most_its_limit() -> None:
    recall, built = Recall(limit=2), []

    def build(value: dict[str, Any]) -> ValidatedAnswer:
        built.append(value["answer"])
        return validated_of(value)

    values = [hit(f"Answer {n} [1].") for n in range(3)]
    for n, value in enumerate(values):
        recall.validated(f"memo-{n}", value, build)
    recall.validated("memo-2", values[2], build)  # kept
    recall.validated("memo-0", values[0], build)  # forgotten when the third made it full: built again
    assert built == ["Answer 0 [1].", "Answer 1 [1].", "Answer 2 [1].", "Answer 0 [1]."]
