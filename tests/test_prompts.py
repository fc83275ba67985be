"""Prompt templates are files with a version, rendered strictly."""

from __future__ import annotations

import pytest

from ingest.vectorstore import StoredChunk
from server.answering.prompting import PromptError, fit_to_budget, format_context, load_template, parse_template


def test_answer_template_has_a_version_and_numbered_context() -> None:
    template = load_template("answer")
    assert template.name == "answer" and template.version
    assert template.variables == {"question", "context"}
    chunks = [
        StoredChunk("a:v:0", "Backups run nightly.", {"title": "Ops", "page": 3}),
        StoredChunk("b:v:0", "Redis keeps the cache.", {"source": "/kb/cache.md", "heading": "Cache"}),
    ]
    rendered = template.render(question="When do backups run?", context=format_context(chunks))
    assert "[1] (Ops, page 3)\nBackups run nightly." in rendered.user
    assert "[2] (/kb/cache.md, Cache)\nRedis keeps the cache." in rendered.user
    assert "When do backups run?" in rendered.user
    assert "[n]" in rendered.user or "[1]" in rendered.system


def test_missing_or_unknown_variables_are_errors() -> None:
    template = load_template("answer")
    with pytest.raises(PromptError, match="needs variables: context"):
        template.render(question="q")
    with pytest.raises(PromptError, match="has no variables: extra"):
        template.render(question="q", context="c", extra="x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no front matter", "starts with front matter"),
        ("---\nname: x\n[user]\nhi", "not closed"),
        ("---\nname: x\n---\n[user]\nhi", "needs 'version'"),
        ("---\nname: x\nversion: 2\n---\n[system]\nonly system", "needs a \\[user\\] block"),
    ],
)
def test_malformed_template_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_template(text, "bad.md")


def test_unknown_template_names_the_available_ones() -> None:
    with pytest.raises(PromptError, match="available: answer"):
        load_template("nope")


def test_context_budget_keeps_best_chunks_that_fit() -> None:
    chunks = [StoredChunk(str(i), "word " * 100, {}) for i in range(5)]
    kept = fit_to_budget(chunks, 250, lambda texts: [100 for _ in texts])
    assert [c.chunk_id for c in kept] == ["0", "1"]
    assert [c.chunk_id for c in fit_to_budget(chunks, 10, lambda texts: [100 for _ in texts])] == ["0"]


def test_the_answer_prompt_names_its_refusal_phrase() -> None:
    template = load_template("answer")
    assert template.refusal == "The documents do not contain the answer."
    assert template.refusal in template.system.template
    assert template.is_refusal("The documents do not contain the answer.")
    assert template.is_refusal("the documents do not contain the answer [1]")
    assert not template.is_refusal("The answer cache keeps answers for seven days [1].")
    with pytest.raises(PromptError, match="refusal phrase"):
        parse_template("---\nname: x\nversion: 1\nrefusal: Nope.\n---\n[user]\nhi $question", "x.md")
