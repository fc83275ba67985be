"""Re-check the sets written the way people ask (issues 22 and 25) against pypdf's text of the shared PDFs.

Run from the repository root:

    python -m eval.datasets.verify_people [--shared DIR] [pdf-qa-people.jsonl] [conversations-dev.jsonl]

`--shared` names the `shared/` folder when it does not sit beside the repository (default `../shared`).
Each record of `pdf-qa-people.jsonl` is first checked by `verify_pdf_qa.check_record` (fields, answer on its
page; `numeric` and `date` are checked as `factoid`); then this script checks what the set adds: the `overlap`
field (recomputed with `overlap.py`), the `labels` of table questions (each on the page), that the answer occurs
on no other page of any PDF (as a whole word; the few exceptions are in `ELSEWHERE_OK` with the reason), that no
PDF matches the probes of an unanswerable question (`PROBES`: what its answer would have to say), and that the
split follows the seeded rule. The conversations get the same checks per turn, plus the shape of a follow-up.
Prints counts and the overlap figures; exits 1 on any problem.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from pypdf import PdfReader

from eval.datasets import verify_pdf_qa
from eval.datasets.overlap import page_overlap

HERE = Path(__file__).resolve().parent
DEFAULT_PEOPLE = HERE / "pdf-qa-people.jsonl"
DEFAULT_CONVERSATIONS = HERE / "conversations-dev.jsonl"
KINDS = ("date", "factoid", "numeric", "paraphrase", "table", "unanswerable")
PEOPLE_SEED = 22
CONVERSATION_SEED = 25
LOW_OVERLAP = 0.30
TURN_FIELDS = {"question", "answer", "source", "page"}
# A follow-up leans on the previous turn: it opens like a continuation or refers back with one of these words.
FOLLOW_UP_OPENINGS = ("and ", "what about ", "how about ", "same ")
_FOLLOW_UP_TEXT = """
    it its it's they them their theirs that this those these he she his her him there then other others same one
    ones both either second first former latter
"""
FOLLOW_UP_WORDS = frozenset(_FOLLOW_UP_TEXT.split())
MAX_FOLLOW_UP_WORDS = 14

FR = "federal-register-2020-17221.pdf"
MP = "multi_page.pdf"
AMT = "amt_handbook_sample.pdf"
OTSL = "2305.03393v1-pg9.pdf"
RP = "redp5110_sampled.pdf"
SC = "scotus-transcript-p1.pdf"
LA = "la-precinct-bulletin-2014-p1.pdf"
NICS = "nics-background-checks-2015-11.pdf"
SEN = "senate-expenditures.pdf"

# Answers that also occur (as a whole word) on another page of some PDF, where the question cannot apply.
ELSEWHERE_OK: dict[str, str] = {
    "p001": "189 is also a cell of the NICS table (Idaho, Multiple)",
    "p002": "157 is also a cell of the NICS table (North Dakota, Redemption)",
    "p059": "the 1980s also head the personal-computer era on page 1; the question asks when undo arrived",
    "p091": "HBEDOYA also occurs in Bedoya's e-mail address on page 4",
    "c001/1": "189 is also a cell of the NICS table (Idaho, Multiple)",
    "c001/2": "157 is also a cell of the NICS table (North Dakota, Redemption)",
    "c049/2": "IBM is also the Redpaper's publisher, on most of its pages; the turn asks who made the typewriter",
}

# For each unanswerable question (by id): (scope, regex) pairs that must match nothing in the normalised
# (whitespace-collapsed, lowercased) page text. The scope is "*" (every PDF), a file name, or "file:page".
# The regex names what an answer would have to say.
PROBES: dict[str, list[tuple[str, str]]] = {
    "p132": [("*", r"december\W{0,3}2015")],
    "p133": [("*", r"samoa")],
    "p134": [(NICS, r"\bden(y|ied|ial)")],
    "p135": [(NICS, r"2014")],
    "p136": [(NICS, r"\d[\d,]* (guns|firearms|weapons) (were )?sold")],
    "p137": [(SEN, r"lodging|hotel")],
    "p138": [("*", r"chicago")],
    "p139": [("*", r"chief of staff")],
    "p140": [(SEN, r"\brent\b|\blease")],
    "p141": [(FR, r"canadian regist|registry of canada")],
    "p142": [(FR, r"passenger")],
    "p143": [(FR, r"lift(ed)? the (grounding|prohibition|order)|rescind|returned to service on")],
    "p144": [(f"{FR}:15", r"fatal|died|death")],
    "p145": [(FR, r"failures (were|have been) reported|reports? of .{0,20}failures")],
    "p146": [(f"{FR}:15", r"\$")],
    "p147": [(MP, r"wordperfect\W{0,3}\(?\d{4}")],
    "p148": [("*", r"word for windows")],
    "p149": [(MP, r"\$|price")],
    "p150": [(MP, r"founded|an wang")],
    "p151": [(MP, r"latex\W{0,3}\(?\d{4}|latex (was )?(first )?released")],
    "p152": [(AMT, r"temperature|°|degrees")],
    "p153": [(AMT, r"times")],
    "p154": [(OTSL, r"pubtables-1m\W.{0,60}0\.\d{2}")],
    "p155": [("*", r"\bgpu")],
    "p156": [(OTSL, r"\b8 \d otsl|enc=8")],
    "p157": [(RP, r"in 2014")],
    "p158": [("*", r"client_applname")],
    "p159": [(RP, r"mike cain (is|has)")],
    "p160": [(RP, r"permissions? per table|maximum number of (row )?permissions")],
    "p161": [(SC, r"affirm|revers|opinion|held that")],
    "p162": [(SC, r"justice")],
    "p163": [(LA, r"2012|11/06/12")],
    "p164": [(LA, r"%|percent|turnout")],
}

# The same for conversation turns whose answer is null: "c012/2" is the second turn of c012.
TURN_PROBES: dict[str, list[tuple[str, str]]] = {
    "c003/3": [(FR, r"readiness flight.{0,60}\$\d")],
    "c007/3": [(f"{FR}:15", r"affects \d+ airplanes|\d+ airplanes of u\.s\. registry")],
    "c009/3": [(FR, r"report (will be|is to be) (posted|published|issued) (on|by|in) ")],
    "c015/2": [(MP, r"microsoft 365\W{0,3}\(?\d{4}")],
    "c016/3": [(MP, r"\$|price|\bcost")],
    "c022/2": [(AMT, r"torque|inch-pound|in\.-lb")],
    "c024/3": [(OTSL, r"\b8 8 (otsl|html)|enc=8")],
    "c027/3": [(RP, r"in 2014")],
    "c029/3": [("*", r"client_applname")],
    "c036/3": [(LA, r"0050003b|0050004|0050002")],
    "c038/3": [(LA, r"2010|11/02/10")],
    "c039/3": [("*", r"december\W{0,3}2015")],
    "c045/3": [(SEN, r"lodging|hotel")],
}


def pdf_path(source: str) -> Path | None:
    for folder in verify_pdf_qa.PDF_DIRS:
        if (folder / source).is_file():
            return folder / source
    return None


def all_sources() -> list[str]:
    """Every English shared PDF (the Korean one is not used)."""
    names = {p.name for folder in verify_pdf_qa.PDF_DIRS for p in folder.glob("*.pdf")}
    return sorted(names - {"normal_4pages.pdf"})


@cache
def raw_pages(source: str) -> tuple[str, ...]:
    """The raw pypdf text of every page (line breaks kept), extracted as `verify_pdf_qa` does."""
    path = pdf_path(source)
    if path is None:
        return ()
    return tuple(page.extract_text() or "" for page in PdfReader(path).pages)


def elsewhere(answer: str, source: str, page: int) -> list[str]:
    """The other pages (of any PDF) where the answer occurs as a whole word."""
    pattern = re.compile(r"(?<![0-9a-z])" + re.escape(verify_pdf_qa.normalise(answer)) + r"(?![0-9a-z])")
    hits = []
    for name in all_sources():
        for number, text in enumerate(verify_pdf_qa.page_texts(name), 1):
            if (name, number) != (source, page) and pattern.search(text):
                hits.append(f"{name}:{number}")
    return hits


def probe_hits(probes: Sequence[tuple[str, str]]) -> list[str]:
    """Where any probe matches (empty if none does)."""
    hits = []
    for scope, regex in probes:
        name, _, page = scope.partition(":")
        pattern = re.compile(regex, re.IGNORECASE)
        for each in all_sources() if name == "*" else [name]:
            texts = verify_pdf_qa.page_texts(each)
            if not texts:
                hits.append(f"{each}: no such PDF")
            for number, text in enumerate(texts, 1):
                if (not page or int(page) == number) and pattern.search(text):
                    hits.append(f"{each}:{number} matches {regex!r}")
    return hits


def split_by_rule(groups: dict[str, list[str]], seed: int) -> dict[str, str]:
    """The seeded split: for each group in sorted order, its sorted ids shuffled; the first ceil(n/2) are tune."""
    rng = random.Random(seed)
    split: dict[str, str] = {}
    for group in sorted(groups):
        ids = sorted(groups[group])
        rng.shuffle(ids)
        half = math.ceil(len(ids) / 2)
        split.update({i: "tune" if n < half else "check" for n, i in enumerate(ids)})
    return split


def record_overlap(question: str, answer: str, source: str, page: int) -> float:
    """The `overlap` field: `overlap.page_overlap` on the raw page text, rounded to 3 places."""
    return round(page_overlap(question, raw_pages(source)[page - 1], answer), 3)


def check_answer_place(key: str, answer: object, source: object, page: object) -> list[str]:
    """Answer on its page (the old set's rule) and on no other page unless listed in ELSEWHERE_OK."""
    record = {"id": key, "question": "-", "answer": answer, "source": source, "page": page}
    problems = verify_pdf_qa.check_record(record | {"kind": "factoid", "split": "tune"})
    if not problems and isinstance(answer, str) and isinstance(source, str) and isinstance(page, int):
        others = elsewhere(answer, source, page)
        if others and key not in ELSEWHERE_OK:
            problems.append(f"answer {answer!r} also on {', '.join(others)}")
    return problems


def check_people_record(record: dict[str, object]) -> list[str]:
    """Every problem with one record of pdf-qa-people.jsonl; empty if it is sound."""
    kind = record.get("kind")
    wanted = verify_pdf_qa.FIELDS | {"overlap"} | ({"labels"} if kind == "table" else set())
    problems = [] if set(record) == wanted else [f"fields {sorted(record)} != {sorted(wanted)}"]
    base = {k: record.get(k) for k in verify_pdf_qa.FIELDS}
    if kind in ("numeric", "date"):
        base["kind"] = "factoid"
    problems += verify_pdf_qa.check_record(base)
    if kind not in KINDS:
        problems.append(f"kind {kind!r} not in {KINDS}")
    if problems:
        return problems
    key, question, answer = str(record["id"]), str(record["question"]), record["answer"]
    source, page, overlap = record["source"], record["page"], record["overlap"]
    if kind == "unanswerable":
        if overlap is not None:
            problems.append("unanswerable record must have overlap null")
        probes = PROBES.get(key)
        if not probes:
            problems.append("unanswerable record without probes in PROBES")
        problems += [f"probe hit: {hit}" for hit in probe_hits(probes or [])]
        return problems
    assert isinstance(answer, str) and isinstance(source, str) and isinstance(page, int)
    problems += check_answer_place(key, answer, source, page)
    expected = record_overlap(question, answer, source, page)
    if not isinstance(overlap, float | int) or isinstance(overlap, bool) or abs(overlap - expected) > 1e-9:
        problems.append(f"overlap {overlap!r} != recomputed {expected}")
    if kind == "table":
        labels = record["labels"]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            problems.append("table record needs labels: a non-empty list of strings")
        else:
            text = verify_pdf_qa.page_texts(source)[page - 1]
            problems += [f"label {x!r} not on page {page}" for x in labels if verify_pdf_qa.normalise(x) not in text]
    return problems


def is_follow_up(question: str) -> bool:
    """Elliptical: short, and opening like a continuation or referring back to the previous turn."""
    lowered = question.casefold().strip()
    tokens = re.findall(r"[a-z0-9']+", lowered.replace("’", "'"))
    refers = lowered.startswith(FOLLOW_UP_OPENINGS) or any(t in FOLLOW_UP_WORDS for t in tokens)
    return refers and len(tokens) <= MAX_FOLLOW_UP_WORDS


def check_turn(key: str, number: int, turn: object) -> list[str]:
    """Every problem with one turn of a conversation."""
    if not isinstance(turn, dict) or set(turn) != TURN_FIELDS:
        return [f"fields must be {sorted(TURN_FIELDS)}"]
    question, answer = turn["question"], turn["answer"]
    if not isinstance(question, str) or not question.strip():
        return ["empty question"]
    problems = []
    if number > 1 and not is_follow_up(question):
        problems.append(f"{question!r} does not read as a follow-up (see is_follow_up)")
    if answer is not None:
        return problems + check_answer_place(key, answer, turn["source"], turn["page"])
    if number == 1:
        problems.append("the opening turn must be answerable")
    if turn["source"] is not None or turn["page"] is not None:
        problems.append("a null answer needs source and page null")
    probes = TURN_PROBES.get(key)
    if not probes:
        problems.append("null answer without probes in TURN_PROBES")
    return problems + [f"probe hit: {hit}" for hit in probe_hits(probes or [])]


def check_conversation(record: dict[str, object]) -> list[str]:
    """Every problem with one conversation; empty if it is sound."""
    if set(record) != {"id", "turns", "split"}:
        return [f"fields {sorted(record)} != ['id', 'split', 'turns']"]
    problems: list[str] = []
    if record["split"] not in verify_pdf_qa.SPLITS:
        problems.append(f"split {record['split']!r} not in {sorted(verify_pdf_qa.SPLITS)}")
    turns = record["turns"]
    if not isinstance(turns, list) or not 2 <= len(turns) <= 3:
        return [*problems, "turns must be a list of 2 or 3 turns"]
    for number, turn in enumerate(turns, 1):
        problems += [f"turn {number}: {p}" for p in check_turn(f"{record['id']}/{number}", number, turn)]
    return problems


def read_jsonl(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    records: list[dict[str, object]] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: invalid JSON: {exc}")
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            problems.append(f"line {number}: not a JSON object")
    return records, problems


def check_ids(records: Iterable[dict[str, object]], prefix: str) -> list[str]:
    ids = [str(r.get("id")) for r in records]
    expected = [f"{prefix}{n:03d}" for n in range(1, len(ids) + 1)]
    return [] if ids == expected else [f"ids must run {prefix}001, {prefix}002, ... in order"]


def check_split(records: Sequence[dict[str, object]], groups: dict[str, list[str]], seed: int) -> list[str]:
    rule = split_by_rule(groups, seed)
    return [
        f"{r['id']}: split {r.get('split')!r}, the rule says {rule[str(r['id'])]!r}"
        for r in records
        if r.get("split") != rule[str(r["id"])]
    ]


def overlap_figures(records: Sequence[dict[str, object]]) -> str:
    values = [float(v) for r in records if isinstance(v := r.get("overlap"), float | int)]
    if not values:
        return "n/a"
    low = sum(v < LOW_OVERLAP for v in values)
    return f"median {statistics.median(values):.3f}, < {LOW_OVERLAP:.2f}: {low}/{len(values)} ({low / len(values):.0%})"


def verify_people(path: Path) -> int:
    records, problems = read_jsonl(path)
    problems += check_ids(records, "p")
    for record in records:
        problems += [f"{record.get('id')}: {p}" for p in check_people_record(record)]
    groups: dict[str, list[str]] = {}
    for record in records:
        groups.setdefault(str(record.get("kind")), []).append(str(record.get("id")))
    problems += check_split(records, groups, PEOPLE_SEED)
    for problem in problems:
        print(problem)
    kinds = Counter(str(r.get("kind")) for r in records)
    splits = Counter((str(r.get("kind")), str(r.get("split"))) for r in records)
    print(f"{path.name}: {len(records)} records")
    for kind in sorted(kinds):
        mine = [r for r in records if r.get("kind") == kind]
        counts = f"{kinds[kind]:>3}  tune {splits[kind, 'tune']:>3}  check {splits[kind, 'check']:>3}"
        print(f"  {kind:<13} {counts}  overlap {overlap_figures(mine)}")
    tune = sum(n for (_, split), n in splits.items() if split == "tune")
    counts = f"{len(records):>3}  tune {tune:>3}  check {len(records) - tune:>3}"
    print(f"  {'total':<13} {counts}  overlap {overlap_figures(records)}")
    print("OK" if not problems else f"FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


def verify_conversations(path: Path) -> int:
    records, problems = read_jsonl(path)
    problems += check_ids(records, "c")
    for record in records:
        problems += [f"{record.get('id')}: {p}" for p in check_conversation(record)]
    groups: dict[str, list[str]] = {}
    follow_ups: list[object] = []
    for record in records:
        turns = record.get("turns")
        later = turns[1:] if isinstance(turns, list) else []
        follow_ups += later
        has_null = any(isinstance(t, dict) and t.get("answer") is None for t in later)
        groups.setdefault("with-null" if has_null else "answerable", []).append(str(record.get("id")))
    problems += check_split(records, groups, CONVERSATION_SEED)
    for problem in problems:
        print(problem)
    null = sum(1 for t in follow_ups if isinstance(t, dict) and t.get("answer") is None)
    print(f"{path.name}: {len(records)} conversations, {len(records) + len(follow_ups)} turns")
    print(f"  follow-ups {len(follow_ups)}: answerable {len(follow_ups) - null}, no answer in any document {null}")
    for group in sorted(groups):
        ids = set(groups[group])
        tune = sum(1 for r in records if r.get("id") in ids and r.get("split") == "tune")
        print(f"  {group:<11} {len(ids):>3}  tune {tune:>3}  check {len(ids) - tune:>3}")
    print("OK" if not problems else f"FAILED: {len(problems)} problem(s)")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    args = list(argv)
    if "--shared" in args:
        at = args.index("--shared")
        if at + 1 >= len(args):
            print("--shared needs a directory")
            return 2
        shared = Path(args[at + 1])
        del args[at : at + 2]
        verify_pdf_qa.PDF_DIRS = (shared / "pdfs" / "docling", shared / "pdfs" / "pdfplumber")
    if not all_sources():
        print(f"no PDFs under {[str(d) for d in verify_pdf_qa.PDF_DIRS]} (pass --shared DIR)")
        return 2
    people = Path(args[0]) if args else DEFAULT_PEOPLE
    conversations = Path(args[1]) if len(args) > 1 else DEFAULT_CONVERSATIONS
    status = verify_people(people)
    if conversations.is_file():
        status |= verify_conversations(conversations)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
