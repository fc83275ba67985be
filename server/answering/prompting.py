"""Versioned prompt templates: loaded from files, rendered with strict variables, filled within a token budget.

A template file has front matter (`name`, `version`) and `[system]` / `[user]`
blocks using `$variables`. The name and version travel with every answer and
into the cache key, so editing a template (and bumping its version) never
serves answers made with the old one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ingest.errors import RagkbError
from ingest.vectorstore import StoredChunk

PROMPTS_DIR = Path(__file__).parent / "prompts"
_BLOCK = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


class PromptError(RagkbError):
    pass


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    name: str
    version: str
    system: str
    user: str


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    name: str
    version: str
    system: string.Template
    user: string.Template
    refusal: str | None = None  # the exact sentence the prompt asks for when the context lacks the answer

    def is_refusal(self, answer: str) -> bool:
        """Whether a model's answer is this prompt's refusal phrase (markers, case and punctuation aside)."""
        if not self.refusal:
            return False
        return _plain(answer).startswith(_plain(self.refusal))

    @property
    def variables(self) -> set[str]:
        found: set[str] = set()
        for template in (self.system, self.user):
            for match in template.pattern.finditer(template.template):
                name = match.group("named") or match.group("braced")
                if name:
                    found.add(name)
        return found

    def render(self, **values: str) -> RenderedPrompt:
        missing = self.variables - values.keys()
        if missing:
            raise PromptError(f"prompt {self.name} v{self.version} needs variables: {', '.join(sorted(missing))}")
        unknown = values.keys() - self.variables
        if unknown:
            raise PromptError(f"prompt {self.name} v{self.version} has no variables: {', '.join(sorted(unknown))}")
        return RenderedPrompt(
            self.name, self.version, self.system.substitute(values).strip(), self.user.substitute(values).strip()
        )


def parse_template(text: str, origin: str) -> PromptTemplate:
    if not text.startswith("---\n"):
        raise PromptError(f"{origin}: a prompt file starts with front matter (---, name:, version:, ---)")
    try:
        header, body = text[4:].split("\n---\n", 1)
    except ValueError:
        raise PromptError(f"{origin}: the front matter is not closed with ---") from None
    meta = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    meta = {k.strip(): v.strip() for k, v in meta.items()}
    for key in ("name", "version"):
        if not meta.get(key):
            raise PromptError(f"{origin}: front matter needs {key!r}")
    parts = _BLOCK.split(body)
    blocks = dict(zip(parts[1::2], parts[2::2], strict=True))
    if "user" not in blocks:
        raise PromptError(f"{origin}: a prompt needs a [user] block")
    template = PromptTemplate(
        meta["name"],
        meta["version"],
        string.Template(blocks.get("system", "")),
        string.Template(blocks["user"]),
        meta.get("refusal") or None,
    )
    if template.refusal and template.refusal not in template.system.template + template.user.template:
        raise PromptError(f"{origin}: the refusal phrase in the front matter must appear in the prompt itself")
    return template


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\[[\d,\s]*\]|[^\w\s]", " ", text.casefold()).split())


def available_templates() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.md"))


@lru_cache(maxsize=32)
def load_template(name: str) -> PromptTemplate:
    path = PROMPTS_DIR / f"{name}.md"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.exists():
        raise PromptError(f"unknown prompt template {name!r}; available: {', '.join(available_templates())}")
    return parse_template(path.read_text(encoding="utf-8"), str(path.name))


def format_context(chunks: Sequence[StoredChunk]) -> str:
    """Numbered passages `[1]..[n]`, one per chunk, with the source so a model can tell them apart."""
    blocks = []
    for number, chunk in enumerate(chunks, start=1):
        meta = chunk.metadata
        where = str(meta.get("title") or meta.get("source") or "")
        if meta.get("page"):
            where += f", page {meta['page']}"
        if meta.get("heading"):
            where += f", {meta['heading']}"
        blocks.append(f"[{number}] ({where})\n{chunk.text.strip()}")
    return "\n\n".join(blocks)


def fit_to_budget(
    chunks: Sequence[StoredChunk], budget_tokens: int, count_tokens: Callable[[list[str]], list[int]]
) -> list[StoredChunk]:
    """The best-ranked chunks whose text fits in the budget; the first always goes in."""
    if not chunks:
        return []
    sizes = count_tokens([c.text for c in chunks])
    kept: list[StoredChunk] = []
    used = 0
    for chunk, size in zip(chunks, sizes, strict=True):
        if kept and used + size > budget_tokens:
            break
        kept.append(chunk)
        used += size
    return kept
