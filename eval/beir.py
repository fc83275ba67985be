"""Reading BEIR-format datasets: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import RagkbError


class DatasetError(RagkbError):
    """A BEIR dataset is missing a file or has a malformed line."""


@dataclass(frozen=True, slots=True)
class BeirDocument:
    doc_id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        """Title and abstract as one text, the way BEIR baselines embed a document."""
        return f"{self.title}\n\n{self.text}" if self.title else self.text


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    if not path.exists():
        raise DatasetError(f"{path} is missing (a BEIR dataset needs corpus.jsonl, queries.jsonl and qrels/)")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: malformed JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or "_id" not in record:
                raise DatasetError(f"{path}:{number}: each line must be an object with an _id")
            yield record


def read_corpus(directory: Path, limit: int | None = None) -> list[BeirDocument]:
    documents = []
    for record in _jsonl(directory / "corpus.jsonl"):
        documents.append(
            BeirDocument(str(record["_id"]), str(record.get("title") or ""), str(record.get("text") or ""))
        )
        if limit is not None and len(documents) >= limit:
            break
    return documents


def read_queries(directory: Path) -> dict[str, str]:
    return {str(r["_id"]): str(r.get("text") or "") for r in _jsonl(directory / "queries.jsonl")}


def read_qrels(directory: Path, split: str) -> dict[str, dict[str, int]]:
    """query id -> {doc id: graded relevance}; rows with relevance 0 are kept (they count as not relevant)."""
    path = directory / "qrels" / f"{split}.tsv"
    if not path.exists():
        available = sorted(p.stem for p in (directory / "qrels").glob("*.tsv"))
        raise DatasetError(f"no qrels for split {split!r} in {directory} (available: {', '.join(available) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for number, row in enumerate(reader, start=1):
            if number == 1 and row and not row[-1].strip().lstrip("-").isdigit():
                continue  # header line
            if len(row) < 3:
                raise DatasetError(f"{path}:{number}: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels
