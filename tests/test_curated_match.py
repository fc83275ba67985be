"""The curated-answer match dataset is well formed, and the calibration script counts correctly (no model)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from eval.curated_match import (
    DEFAULT_PAIRS,
    GUARD_THRESHOLDS,
    HALVES,
    THRESHOLDS,
    Count,
    DatasetError,
    Figures,
    Pair,
    choose,
    choose_guarded,
    figures,
    load_pairs,
    make_splits,
    read_split,
    sweep,
)
from server.review.matching import distinguishing_terms, same_need


def test_dataset_is_well_formed_and_balanced() -> None:
    pairs = load_pairs(DEFAULT_PAIRS)  # raises on bad fields, duplicate ids, match/kind disagreement
    assert len(pairs) >= 120
    ids = [pair.id for pair in pairs]
    assert len(set(ids)) == len(ids)
    assert all(pair.match == (pair.kind == "paraphrase") for pair in pairs)
    assert all(pair.curated != pair.asked for pair in pairs)
    kinds = Counter(pair.kind for pair in pairs)
    assert set(kinds) == {"paraphrase", "near_miss", "unrelated"}
    assert 0.40 <= kinds["paraphrase"] / len(pairs) <= 0.50
    assert 0.40 <= kinds["near_miss"] / len(pairs) <= 0.50
    assert 0.05 <= kinds["unrelated"] / len(pairs) <= 0.15


def test_splits_cover_every_id_once_stratified_and_reproducible() -> None:
    pairs = load_pairs(DEFAULT_PAIRS)
    halves = {half: read_split(half) for half in HALVES}
    assert not halves["tune"] & halves["check"]
    assert halves["tune"] | halves["check"] == {pair.id for pair in pairs}
    assert {half: sorted(ids) for half, ids in halves.items()} == make_splits(pairs)
    for kind, total in Counter(pair.kind for pair in pairs).items():
        in_tune = sum(1 for pair in pairs if pair.kind == kind and pair.id in halves["tune"])
        assert in_tune == math.ceil(total / 2)


def _pair(pid: str, kind: str, curated: str = "How do I install ragkb?", asked: str = "other") -> Pair:
    return Pair(pid, curated, asked, kind == "paraphrase", kind)


def test_figures_count_matches_per_kind_on_a_hand_made_input() -> None:
    pairs = [
        _pair("a", "paraphrase"),
        _pair("b", "paraphrase"),
        _pair("c", "paraphrase", asked="  how do I INSTALL ragkb "),  # same question_key: a match at any cosine
        _pair("d", "near_miss"),
        _pair("e", "near_miss"),
        _pair("f", "unrelated"),
    ]
    cosines = {"a": 0.95, "b": 0.85, "c": 0.10, "d": 0.90, "e": 0.50, "f": 0.90}
    at_90 = figures(pairs, cosines, 0.90)
    assert at_90 == Figures(0.90, Count(3, 2), Count(2, 1), Count(1, 1))  # cosine == threshold matches
    assert at_90.paraphrase.rate == pytest.approx(2 / 3)
    assert at_90.near_miss.rate == 0.5
    at_96 = figures(pairs, cosines, 0.96)
    assert (at_96.paraphrase.matched, at_96.near_miss.matched, at_96.unrelated.matched) == (1, 0, 0)
    at_80 = figures(pairs, cosines, 0.80)
    assert (at_80.paraphrase.matched, at_80.near_miss.matched, at_80.unrelated.matched) == (3, 1, 1)
    assert figures([], {}, 0.9).paraphrase.rate == 0.0
    table = sweep(pairs, cosines)
    assert [row.threshold for row in table] == list(THRESHOLDS)
    assert THRESHOLDS[0] == 0.80 and THRESHOLDS[-1] == 0.98 and len(THRESHOLDS) == 19
    # near miss "d" (0.90) stops matching at 0.91: the lowest clean threshold
    assert choose(table).threshold == 0.91


def test_choose_falls_back_to_fewest_near_miss_matches_and_the_higher_threshold() -> None:
    def row(threshold: float, near: int) -> Figures:
        return Figures(threshold, Count(4, 1), Count(4, near), Count(1, 0))

    assert choose([row(0.80, 2), row(0.81, 0), row(0.82, 0)]).threshold == 0.81
    assert choose([row(0.80, 3), row(0.81, 1), row(0.82, 1), row(0.83, 2)]).threshold == 0.82


def test_load_pairs_rejects_inconsistent_records(tmp_path: Path) -> None:
    good = {"id": "p1", "curated": "a?", "asked": "b?", "match": True, "kind": "paraphrase"}
    bad = [
        [good, good],
        [{**good, "match": False}],
        [{**good, "kind": "synonym"}],
        [{**good, "extra": 1}],
        [{key: value for key, value in good.items() if key != "asked"}],
    ]
    for records in bad:
        path = tmp_path / "pairs.jsonl"
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
        with pytest.raises(DatasetError):
            load_pairs(path)


NICS = "How many NICS background checks did Texas have in November 2015?"


@pytest.mark.parametrize(
    ("asked", "curated", "expected"),
    [
        ("How many NICS background checks did Texas have in November 2016?", NICS, {"2015", "2016"}),
        ("How many NICS background checks did Ohio have in November 2015?", NICS, {"ohio", "texas"}),
        ("How many NICS background checks did Texas have in December 2015?", NICS, {"december", "november"}),
        (
            "Which state had the fewest NICS checks in November 2015?",
            "Which state had the most NICS checks in November 2015?",
            {"fewest", "most"},
        ),
        ("How do I uninstall ragkb?", "How do I install ragkb?", {"uninstall"}),
        ("Can I disable the reranker?", "How do I enable the reranker?", {"disable", "enable"}),
        ("Which files does ragkb not ingest?", "Which files does ragkb ingest?", {"not"}),
        ("When did the Senate approve the budget?", "How much did the Senate approve in the budget?", None),
        ("How many handgun checks did Texas have?", "How many long gun checks did Texas have?", None),
    ],
)
def test_distinguishing_terms_finds_what_changes_the_need(asked: str, curated: str, expected: set[str] | None) -> None:
    terms = distinguishing_terms(asked, curated)
    assert terms, "a different need must be told apart"
    if expected is not None:
        assert expected <= set(terms)
    assert distinguishing_terms(curated, asked), "the guard is symmetric"


@pytest.mark.parametrize(
    ("asked", "curated"),
    [
        ("In ragkb, what's the default chunk size?", "What is the default chunk size in ragkb?"),
        ("how can I install ragkb on my laptop", "How do I install ragkb?"),
        ("Texas, Nov 2015: how many NICS background checks?", NICS),
        ("Are unchanged files re-embedded by ragkb?", "Does ragkb re-embed files that have not changed?"),
        ("What's the biggest file ragkb can ingest?", "What is the largest file ragkb will ingest?"),
        ("When was Knowles v. Mirzayance argued?", "On which date was Knowles v. Mirzayance argued?"),
    ],
)
def test_distinguishing_terms_lets_a_plain_paraphrase_through(asked: str, curated: str) -> None:
    assert distinguishing_terms(asked, curated) == []


def test_a_reworded_paraphrase_is_refused_the_known_price_of_the_guard() -> None:
    # "argument"/"argued" and "date"/"when" are substitutions to a lexical guard without a synonym table
    asked, curated = (
        "When was the oral argument in Knowles v. Mirzayance?",
        "On what date was Knowles v. Mirzayance argued?",
    )
    assert distinguishing_terms(asked, curated)


def test_same_need_needs_the_threshold_and_no_distinguishing_term() -> None:
    paraphrase = ("In ragkb, what's the default chunk size?", "What is the default chunk size in ragkb?")
    assert same_need(*paraphrase, similarity=0.90, threshold=0.90)
    assert not same_need(*paraphrase, similarity=0.89, threshold=0.90)
    assert not same_need("How do I uninstall ragkb?", "How do I install ragkb?", similarity=0.99, threshold=0.5)


def test_guarded_figures_and_choice_on_a_hand_made_input() -> None:
    pairs = [
        Pair(
            "a",
            "What is the default chunk size in ragkb?",
            "In ragkb, what's the default chunk size?",
            True,
            "paraphrase",
        ),
        Pair("b", "How do I install ragkb?", "What are the steps to set up ragkb?", True, "paraphrase"),
        Pair("c", "How do I install ragkb?", "How do I uninstall ragkb?", False, "near_miss"),
        Pair("d", NICS, NICS.replace("2015", "2016"), False, "near_miss"),
        Pair("e", "How do I install ragkb?", "How do I install ragkb", False, "unrelated"),  # same key: matches
    ]
    cosines = {"a": 0.93, "b": 0.80, "c": 0.97, "d": 0.99, "e": 0.10}
    at_60 = figures(pairs, cosines, 0.60, guard=True)
    # "b" swaps "install" for "steps"/"set up": the guard refuses it; the near misses are refused whatever the cosine
    assert at_60 == Figures(0.60, Count(2, 1), Count(2, 0), Count(1, 1))
    assert figures(pairs, cosines, 0.60) == Figures(0.60, Count(2, 2), Count(2, 2), Count(1, 1))
    assert figures(pairs, cosines, 0.94, guard=True).paraphrase.matched == 0
    table = sweep(pairs, cosines, guard=True)
    assert [row.threshold for row in table] == list(GUARD_THRESHOLDS)
    assert GUARD_THRESHOLDS[0] == 0.50 and GUARD_THRESHOLDS[-1] == 0.98 and len(GUARD_THRESHOLDS) == 49


def test_choose_guarded_breaks_equal_recall_ties_upwards_and_counts_unrelated() -> None:
    def row(threshold: float, hits: int, near: int, unrelated: int = 0) -> Figures:
        return Figures(threshold, Count(4, hits), Count(4, near), Count(2, unrelated))

    table = [row(0.50, 3, 1), row(0.51, 3, 0, 1), row(0.52, 2, 0), row(0.53, 2, 0), row(0.54, 1, 0)]
    assert choose_guarded(table).threshold == 0.53  # lowest clean is 0.52; 0.53 has the same hits
    assert choose_guarded([row(0.50, 3, 2), row(0.51, 2, 1, 1), row(0.52, 1, 2)]).threshold == 0.52
