"""Token-aware chunking with the embedder's own tokenizer.

A chunk longer than the model's window would have its tail silently cut off by
the encoder, so every chunk is measured in the embedder's tokens. Chunks break
on paragraph and sentence boundaries where they can, and on token boundaries
only when a single sentence is longer than a chunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .models import Chunk, ExtractedDocument

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n")


class Tokenizer(Protocol):
    """The slice of a Hugging Face fast tokenizer the chunker needs."""

    def __call__(self, text: list[str], *, add_special_tokens: bool, return_offsets_mapping: bool) -> object: ...


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    tokens: int


@dataclass(frozen=True, slots=True)
class ChunkingConfig:
    chunk_tokens: int = 200
    overlap_tokens: int = 32

    def fingerprint(self) -> str:
        return f"tok{self.chunk_tokens}-ov{self.overlap_tokens}"


class Chunker:
    """Splits extracted documents into chunks of at most `max_tokens` embedder tokens."""

    def __init__(self, tokenizer: Tokenizer, config: ChunkingConfig, window: int) -> None:
        self._tokenizer = tokenizer
        # The window includes the [CLS]/[SEP] the encoder adds around every text.
        self.max_tokens = min(config.chunk_tokens, window - 2)
        self.overlap = min(config.overlap_tokens, self.max_tokens // 2)
        self.config = config

    def _encode(self, texts: Sequence[str]) -> tuple[list[int], list[list[tuple[int, int]]]]:
        encoded = self._tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        ids: list[list[int]] = encoded["input_ids"]  # type: ignore[index]
        offsets: list[list[tuple[int, int]]] = encoded["offset_mapping"]  # type: ignore[index]
        return [len(i) for i in ids], offsets

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._encode(texts)[0]

    def estimate_tokens(self, text: str, *, samples: int = 8, width: int = 4000) -> int:
        """About how many tokens `text` is, from `samples` slices of `width` characters spread over it: a few
        milliseconds where counting a megabyte of punctuation exactly takes seconds (and holds the tokenizer,
        which queries share). Exact for a text no longer than the slices together."""
        if len(text) <= samples * width:
            return sum(self.count_tokens([text]))
        step = (len(text) - width) / (samples - 1)
        slices = [text[round(i * step) : round(i * step) + width] for i in range(samples)]
        return round(sum(self.count_tokens(slices)) * len(text) / (samples * width))

    def _units(self, text: str, base: int) -> list[tuple[int, int]]:
        """Sentence-sized spans (absolute offsets), trimmed of surrounding whitespace."""
        spans: list[tuple[int, int]] = []
        for paragraph in _split_spans(text, _PARAGRAPH, 0):
            for start, end in _split_spans(text[paragraph[0] : paragraph[1]], _SENTENCE_END, paragraph[0]):
                spans.append((base + start, base + end))
        return spans

    def chunk(self, document: ExtractedDocument) -> list[Chunk]:
        text = document.text
        chunks: list[Chunk] = []
        for section in document.sections:
            spans = self._units(text[section.start : section.end], section.start)
            if not spans:
                continue
            counts, offsets = self._encode([text[s:e] for s, e in spans])
            units: list[_Unit] = []
            for (start, end), count, offs in zip(spans, counts, offsets, strict=True):
                if count <= self.max_tokens:
                    units.append(_Unit(start, end, count))
                    continue
                for i in range(0, count, self.max_tokens):  # one sentence longer than a chunk
                    window = offs[i : i + self.max_tokens]
                    units.append(_Unit(start + window[0][0], start + window[-1][1], len(window)))
            for first, last, tokens in self._pack(units):
                chunks.append(
                    Chunk(
                        text=text[first:last],
                        start=first,
                        end=last,
                        index=len(chunks),
                        page=section.page,
                        heading=section.heading,
                        token_count=tokens,
                        ocr_confidence=section.ocr_confidence,
                    )
                )
        return chunks

    def _pack(self, units: list[_Unit]) -> list[tuple[int, int, int]]:
        """Greedy packing of units into chunks, carrying up to `overlap` tokens of tail into the next."""
        packed: list[tuple[int, int, int]] = []
        current: list[_Unit] = []
        total = 0
        for unit in units:
            if current and total + unit.tokens > self.max_tokens:
                packed.append((current[0].start, current[-1].end, total))
                carried: list[_Unit] = []
                carried_tokens = 0
                for previous in reversed(current):
                    if carried_tokens + previous.tokens > self.overlap:
                        break
                    carried.insert(0, previous)
                    carried_tokens += previous.tokens
                if carried_tokens + unit.tokens > self.max_tokens:
                    carried, carried_tokens = [], 0
                current, total = carried, carried_tokens
            current.append(unit)
            total += unit.tokens
        if current:
            packed.append((current[0].start, current[-1].end, total))
        return packed


def _split_spans(text: str, separator: re.Pattern[str], base: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position = 0
    for match in separator.finditer(text):
        spans.extend(_trimmed(text, position, match.start(), base))
        position = match.end()
    spans.extend(_trimmed(text, position, len(text), base))
    return spans


def _trimmed(text: str, start: int, end: int, base: int) -> list[tuple[int, int]]:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return []
    lead = len(piece) - len(piece.lstrip())
    return [(base + start + lead, base + start + lead + len(stripped))]
