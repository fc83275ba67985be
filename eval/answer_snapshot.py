"""Record what the query path answers and ranks, to show a speed change altered neither.

    python -m eval.answer_snapshot record --out A.json --collection NAME (--questions FILE | --beir DIR)
                                   [--documents DIR] [--limit N] [--offset N] [--ranking-k 100]
    python -m eval.answer_snapshot compare A.json B.json

`record` answers every question through the one answering entry (`Answerer`, as HTTP does; the answer cache
cleared first, so every answer is made fresh) and keeps each response whole except what differs between two
runs by nature (timings, request id): answer text, citations, outcome, confidence, grounded, abstained,
removed markers, related passages. It also keeps each question's `hybrid` and `dense`/`bm25` rankings of
`--ranking-k` chunks (ids and scores, as `/v1/retrieve` ranks them) from the same service.

Questions: a question set (`--questions`, JSONL with `question`, e.g. eval/datasets/pdf-qa-dev.jsonl;
`--documents` ingests a folder's PDFs into the collection first, unchanged files skipped) or a BEIR
dataset's queries (`--beir`, in file order, `--offset` skipped first: eval.bench_query asks the same ones).
The settings come from the environment (`RAGKB_DATA_DIR`, `RAGKB_EMBED_BACKEND`, ...), as for `ragkb`.

`compare` prints every question whose response or ranking differs and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ingest.config import get_settings
from ingest.pipeline import Ingestor
from server.answering.entry import Answerer, Asker, Held
from server.answering.service import QueryService

from .beir import read_queries
from .qa import ingest_documents, read_question_set

RANKED = ("hybrid", "dense", "bm25")
_VARYING = {"timings", "request_id"}  # differ between two runs of the same answer


def question_items(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(id, question) pairs from `--questions` (a question set) or `--beir` (its queries), `--offset` and
    `--limit` applied."""
    if args.questions is not None:
        items = [(item.id, item.question) for item in read_question_set(args.questions)]
    else:
        items = list(read_queries(args.beir).items())
    return items[args.offset :][: args.limit]


def _ranking(service: QueryService, name: str, question: str, collection: str, k: int) -> list[list[Any]]:
    chunks = service.retriever(name).retrieve(question, collection=collection, top_k=k)
    return [[chunk.chunk_id, chunk.score] for chunk in chunks]


async def _record(service: QueryService, items: list[tuple[str, str]], collection: str, k: int) -> list[Any]:
    answerer = Answerer.open(service.settings, service=service)
    service.cache.clear()
    records: list[Any] = []
    try:
        for number, (item_id, question) in enumerate(items, start=1):
            query = answerer.query(question, collection=collection)
            result = await answerer.answer(query, asker=Asker(request_id=f"snapshot-{item_id}"))
            response = {"held": result.review_id} if isinstance(result, Held) else result.model_dump(exclude=_VARYING)
            rankings = {name: _ranking(service, name, question, collection, k) for name in RANKED} if k else {}
            records.append({"id": item_id, "question": question, "response": response, "rankings": rankings})
            if number % 25 == 0:
                print(f"  {number}/{len(items)}", file=sys.stderr, flush=True)
    finally:
        await answerer.aclose()
    return records


def record(args: argparse.Namespace) -> None:
    settings = get_settings()
    service = QueryService(settings)
    if args.documents is not None:
        reader = service.reader
        ingestor = Ingestor(settings, store=reader.store, embedder=reader.embedder)
        ingest_documents(ingestor, [args.documents], args.collection, ["*.pdf"])
    records = asyncio.run(_record(service, question_items(args), args.collection, args.ranking_k))
    meta = {"collection": args.collection, "backend": service.reader.embedder.backend, **service.describe()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1, sort_keys=True))
    print(f"{len(records)} answers and rankings written to {args.out}")


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per question (by id) whose response or ranking is not identical, plus any missing one."""
    old = {r["id"]: r for r in before["records"]}
    new = {r["id"]: r for r in after["records"]}
    found = [f"{i}: only in the first" for i in old.keys() - new.keys()]
    found += [f"{i}: only in the second" for i in new.keys() - old.keys()]
    for i in sorted(old.keys() & new.keys()):
        a, b = old[i], new[i]
        changed = sorted(
            key
            for key in a["response"].keys() | b["response"].keys()
            if a["response"].get(key) != b["response"].get(key)
        )
        if changed:
            found.append(f"{i}: response differs in {', '.join(changed)}")
        for name in sorted(a["rankings"].keys() | b["rankings"].keys()):
            if a["rankings"].get(name) != b["rankings"].get(name):
                found.append(f"{i}: {name} ranking differs")
    return found


def compare(args: argparse.Namespace) -> None:
    before, after = (json.loads(path.read_text()) for path in (args.first, args.second))
    found = differences(before, after)
    total = len(before["records"])
    rankings = sum(len(r["rankings"]) for r in before["records"])
    for line in found:
        print(line)
    verdict = "identical" if not found else f"{len(found)} differences"
    print(f"{total} responses and {rankings} rankings compared: {verdict}")
    sys.exit(1 if found else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="answer and rank every question, write them to --out")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--collection", required=True)
    source = rec.add_mutually_exclusive_group(required=True)
    source.add_argument("--questions", type=Path, help="a question set (JSONL with `question`)")
    source.add_argument("--beir", type=Path, help="a BEIR dataset folder (its queries.jsonl)")
    rec.add_argument("--documents", type=Path, help="a folder of PDFs to ingest into the collection first")
    rec.add_argument("--limit", type=int, default=None, help="only the first N questions (after --offset)")
    rec.add_argument("--offset", type=int, default=0, help="questions skipped first")
    rec.add_argument("--ranking-k", type=int, default=100, help="chunks per ranking kept (0: no rankings)")
    cmp = commands.add_parser("compare", help="exit 1 if two snapshots differ anywhere")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    args = parser.parse_args()
    (record if args.command == "record" else compare)(args)


if __name__ == "__main__":
    main()
