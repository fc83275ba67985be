"""Citation support: a quoted sentence is backed by its passage, a sentence citing an unrelated passage is not;
answers are cut into claims with the markers each one carries."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.embedder import Embedder
from server.answering.support import claim_sentences, has_claim, support, support_many

from .helpers import ACCIDENT

# Page 5 of redp5110_sampled.pdf: the cost of a data breach.
BREACH = (
    "The average cost of a data breach per compromised record containing sensitive and confidential\n"
    "information is $145, and the average total cost of a data breach rose by 15% in 2013."
)


def test_a_quoted_sentence_is_fully_supported() -> None:
    quote = (
        "Ethiopian Airlines Flight 302 crashed shortly after takeoff from Addis Ababa, Ethiopia, "
        "resulting in 157 fatalities."
    )
    assert support(quote, ACCIDENT) == 1.0
    assert support(quote + " [2]", ACCIDENT) == 1.0  # the marker is not part of the claim


@pytest.mark.slow
def test_an_unrelated_passage_gives_low_support(embedder: Embedder) -> None:
    claim = "A data breach costs $145 per compromised record on average."
    assert support(claim, ACCIDENT) < 0.2
    assert support(claim, ACCIDENT, embed=embedder.embed) < 0.2
    assert support(claim, BREACH, embed=embedder.embed) > 0.6


def test_a_paraphrase_gains_from_the_embedding(embedder: Embedder) -> None:
    paraphrase = "The Ethiopian jet went down soon after leaving Addis Ababa and 157 people died."
    lexical = support(paraphrase, ACCIDENT)
    assert support(paraphrase, ACCIDENT, embed=embedder.embed) > lexical
    assert support("The second crash killed 190 people in Kenya.", ACCIDENT, embed=embedder.embed) < 0.5


def test_support_many_embeds_once_and_keeps_order(embedder: Embedder) -> None:
    calls: list[int] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return embedder.embed(texts)

    pairs = [
        ("Average breach costs rose by 15% in 2013.", BREACH),
        ("Average breach costs rose by 15% in 2013.", ACCIDENT),
        ("On March 10, 2019, only four months after the FAA issued Emergency AD", ACCIDENT),
    ]
    scores = support_many(pairs, counting)
    assert len(calls) == 1
    assert scores[0] > 0.6 > 0.2 > scores[1] and scores[2] == 1.0
    assert support_many([], counting) == [] and len(calls) == 1


@pytest.mark.parametrize(
    ("answer", "claims"),
    [
        ("The fee is $40. [1] It rose in 2013. [2]", [("The fee is $40.", [1]), ("It rose in 2013.", [2])]),
        ("The fee is $40 [1][3]. It rose in 2013 [2].", [("The fee is $40.", [1, 3]), ("It rose in 2013.", [2])]),
        ("The fee is $40.[1, 2] Dr. Smith set it.[2]", [("The fee is $40.", [1, 2]), ("Dr. Smith set it.", [2])]),
        ("[1] The fee is $40. No marker here.", [("The fee is $40.", [1]), ("No marker here.", [])]),
        (
            "In summary:\n- Fees are $40 [1]\n- Forms are free [2]",
            [("In summary:", []), ("Fees are $40", [1]), ("Forms are free", [2])],
        ),
        ("[1][2]", [("", [1, 2])]),
        ("", []),
    ],
)
def test_claim_sentences(answer: str, claims: list[tuple[str, list[int]]]) -> None:
    assert claim_sentences(answer) == claims


@pytest.mark.parametrize(
    ("sentence", "claim"),
    [
        ("The fee is $40. [1]", True),
        ("Ethiopian Airlines Flight 302 crashed.", True),
        ("In summary:", False),
        ("Here is what I found:", False),
        ("Overall.", False),
        ("I could not find an answer in the documents.", False),
        ("The documents do not say.", False),
        ("It is.", False),
        ("[2]", False),
    ],
)
def test_has_claim(sentence: str, claim: bool) -> None:
    assert has_claim(sentence) is claim
