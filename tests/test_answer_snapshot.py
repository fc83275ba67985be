"""eval.answer_snapshot's comparison: any changed response field or ranking is reported, by question."""

from __future__ import annotations

import copy
from typing import Any

from eval.answer_snapshot import differences


def _snapshot() -> dict[str, Any]:
    response = {"answer": "Aspirin lowers fever. [1]", "confidence": 0.8123, "outcome": "answered", "citations": []}
    rankings = {"hybrid": [["doc:a:0", 1.2], ["doc:b:3", 0.4]], "bm25": [["doc:b:3", 7.0]]}
    return {"meta": {}, "records": [{"id": "q1", "question": "?", "response": response, "rankings": rankings}]}


def test_identical_snapshots_have_no_differences() -> None:
    assert differences(_snapshot(), _snapshot()) == []


def test_a_changed_confidence_ranking_or_missing_question_is_reported() -> None:
    after = copy.deepcopy(_snapshot())
    after["records"][0]["response"]["confidence"] = 0.8124
    after["records"][0]["rankings"]["hybrid"].reverse()
    after["records"].append({"id": "q2", "question": "?", "response": {}, "rankings": {}})
    assert differences(_snapshot(), after) == [
        "q2: only in the second",
        "q1: response differs in confidence",
        "q1: hybrid ranking differs",
    ]
