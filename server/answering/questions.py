"""The one place that decides what a question is: how it is cleaned for retrieval and keyed for caches."""

from __future__ import annotations

import unicodedata

from ingest.errors import RagkbError


class QuestionError(RagkbError):
    """The question is empty or too long (HTTP 422)."""


def clean_question(question: str, *, max_chars: int) -> str:
    """The question as retrieval sees it: Unicode-normalised (NFKC) with its whitespace collapsed, so
    spacing or full-width characters never change what is retrieved. Empty or oversized is an error."""
    text = " ".join(unicodedata.normalize("NFKC", question).split())
    if not text:
        raise QuestionError("the question is empty")
    if len(text) > max_chars:
        raise QuestionError(
            f"the question is {len(text)} characters; the limit is {max_chars} (RAGKB_MAX_QUESTION_CHARS)"
        )
    return text


def question_key(question: str) -> str:
    """The question as caches key it: cleaned, case-folded, without trailing punctuation. Two questions
    with the same key retrieve the same chunks (the embedder and BM25 both ignore case and punctuation)."""
    text = " ".join(unicodedata.normalize("NFKC", question).split())
    return text.casefold().rstrip("?!. ")
