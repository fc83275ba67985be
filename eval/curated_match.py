"""Calibrate the similarity threshold at which a new question is answered from a curated answer.

    python -m eval.curated_match [--pairs FILE] [--split tune|check|all] [--guard] [--choose] [--write-splits]

A curated answer matches a later question when both have the same `question_key`, or when the cosine
similarity of their embeddings (the packaged all-MiniLM-L6-v2; vectors are L2-normalised, so the dot product
is the cosine) is at or above the threshold. Each hand-written pair in `eval/datasets/curated-pairs.jsonl` is a
paraphrase (should match), a near miss (same topic and wording, another information need: must not match) or
unrelated (must not match). For every threshold 0.80..0.98 the script prints the paraphrase hit rate and the
false-match rates of near misses and unrelated pairs on the chosen split.

`--guard` evaluates `server.review.matching.same_need` instead: the cosine must clear the threshold and the
lexical guard (`distinguishing_terms`: numbers, dates, names, negation, contrast words, answer kind, swapped
content words) must find no difference. Its sweep runs 0.50..0.98, since the guard, not the cosine, is what
stops near misses.

`--choose` picks the threshold on the tune half and reports it on the check half. Unguarded: the lowest
threshold whose near-miss false-match rate is 0 (if none is, the smallest rate, ties going to the higher
threshold). Guarded: the lowest threshold with no near-miss and no unrelated false match on tune; thresholds
with the same tune paraphrase hits count as ties, and ties go to the higher threshold (the same recall with
more margin); if no threshold is clean, the fewest false matches, ties to the higher threshold. Either way it
writes `eval/baselines/curated-match.json` with both: the guarded pick at the top level (what to serve) and
the unguarded pick under "unguarded". A false match serves a wrong answer with a reviewer's authority; a miss
only costs a normal answer, so false matches decide the threshold and paraphrase recall is what is left.

The split is fixed by pair id (`eval/splits/curated-pairs-{tune,check}.txt`): stratified by kind, each kind's
sorted ids shuffled with one `random.Random(2026)` (kinds in alphabetical order), the first ceil(n/2) go to tune.
`--write-splits` rewrites those files from the dataset.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.answering.questions import question_key
from server.review.matching import same_need

if TYPE_CHECKING:
    from ingest.embedder import Embedder

HERE = Path(__file__).resolve().parent
DEFAULT_PAIRS = HERE / "datasets" / "curated-pairs.jsonl"
SPLITS = HERE / "splits"
BASELINE = HERE / "baselines" / "curated-match.json"
SEED = 2026
KINDS = ("near_miss", "paraphrase", "unrelated")
HALVES = ("tune", "check")
THRESHOLDS = tuple(round(0.80 + 0.01 * step, 2) for step in range(19))  # 0.80 .. 0.98
GUARD_THRESHOLDS = tuple(round(0.50 + 0.01 * step, 2) for step in range(49))  # 0.50 .. 0.98


@dataclass(frozen=True, slots=True)
class Pair:
    id: str
    curated: str
    asked: str
    match: bool
    kind: str


@dataclass(frozen=True, slots=True)
class Count:
    """How many pairs of one kind there are and how many of them matched."""

    total: int
    matched: int

    @property
    def rate(self) -> float:
        return self.matched / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.total, "matched": self.matched, "rate": round(self.rate, 4)}


@dataclass(frozen=True, slots=True)
class Figures:
    """One threshold's outcome on a set of pairs: paraphrase hits, near-miss and unrelated false matches."""

    threshold: float
    paraphrase: Count
    near_miss: Count
    unrelated: Count

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "paraphrase_hits": self.paraphrase.as_dict(),
            "near_miss_false_matches": self.near_miss.as_dict(),
            "unrelated_false_matches": self.unrelated.as_dict(),
        }


class DatasetError(ValueError):
    """The pairs file or a split file is malformed."""


def load_pairs(path: Path) -> list[Pair]:
    pairs: list[Pair] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pair = Pair(
                id=str(record["id"]),
                curated=str(record["curated"]),
                asked=str(record["asked"]),
                match=bool(record["match"]),
                kind=str(record["kind"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}:{number}: not a pair record ({exc})") from exc
        if set(record) != {"id", "curated", "asked", "match", "kind"}:
            raise DatasetError(f"{path}:{number}: unexpected fields {sorted(record)}")
        if pair.kind not in KINDS:
            raise DatasetError(f"{path}:{number}: kind {pair.kind!r} is not one of {KINDS}")
        if pair.match != (pair.kind == "paraphrase"):
            raise DatasetError(f"{path}:{number}: match={pair.match} contradicts kind {pair.kind}")
        if not pair.curated.strip() or not pair.asked.strip():
            raise DatasetError(f"{path}:{number}: empty question")
        if pair.id in seen:
            raise DatasetError(f"{path}:{number}: duplicate id {pair.id}")
        seen.add(pair.id)
        pairs.append(pair)
    return pairs


def make_splits(pairs: Sequence[Pair]) -> dict[str, list[str]]:
    """The tune and check halves: stratified by kind, seeded, reproducible from the pair ids alone."""
    rng = random.Random(SEED)
    halves: dict[str, list[str]] = {"tune": [], "check": []}
    for kind in KINDS:
        ids = sorted(pair.id for pair in pairs if pair.kind == kind)
        rng.shuffle(ids)
        middle = (len(ids) + 1) // 2
        halves["tune"].extend(ids[:middle])
        halves["check"].extend(ids[middle:])
    return {half: sorted(ids) for half, ids in halves.items()}


def split_path(half: str) -> Path:
    return SPLITS / f"curated-pairs-{half}.txt"


def read_split(half: str) -> set[str]:
    path = split_path(half)
    if not path.exists():
        raise DatasetError(f"{path} is missing (python -m eval.curated_match --write-splits)")
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def select(pairs: Sequence[Pair], split: str) -> list[Pair]:
    if split == "all":
        return list(pairs)
    ids = read_split(split)
    unknown = ids - {pair.id for pair in pairs}
    if unknown:
        raise DatasetError(f"split {split} names ids not in the dataset: {sorted(unknown)[:5]}")
    return [pair for pair in pairs if pair.id in ids]


def is_match(pair: Pair, cosine: float, threshold: float, *, guard: bool = False) -> bool:
    """The matcher under test: the same normalised question, or embeddings at least `threshold` alike (with
    `guard`, also no distinguishing term: `same_need`, as the server decides)."""
    if question_key(pair.curated) == question_key(pair.asked):
        return True
    if guard:
        return same_need(pair.asked, pair.curated, cosine, threshold)
    return cosine >= threshold


def figures(pairs: Sequence[Pair], cosines: Mapping[str, float], threshold: float, *, guard: bool = False) -> Figures:
    """Count matches per kind at one threshold; `cosines` maps a pair id to its two questions' cosine."""
    totals = dict.fromkeys(KINDS, 0)
    matched = dict.fromkeys(KINDS, 0)
    for pair in pairs:
        totals[pair.kind] += 1
        if is_match(pair, cosines[pair.id], threshold, guard=guard):
            matched[pair.kind] += 1
    count = {kind: Count(totals[kind], matched[kind]) for kind in KINDS}
    return Figures(threshold, count["paraphrase"], count["near_miss"], count["unrelated"])


def sweep(pairs: Sequence[Pair], cosines: Mapping[str, float], *, guard: bool = False) -> list[Figures]:
    thresholds = GUARD_THRESHOLDS if guard else THRESHOLDS
    return [figures(pairs, cosines, threshold, guard=guard) for threshold in thresholds]


def choose(table: Sequence[Figures]) -> Figures:
    """The lowest threshold with no near-miss false match; failing that, the fewest (ties: higher threshold)."""
    clean = [row for row in table if row.near_miss.matched == 0]
    if clean:
        return min(clean, key=lambda row: row.threshold)
    return min(table, key=lambda row: (row.near_miss.rate, -row.threshold))


def choose_guarded(table: Sequence[Figures]) -> Figures:
    """The lowest threshold with no near-miss and no unrelated false match; thresholds with the same paraphrase
    hits tie, and ties go to the higher one. None clean: the fewest false matches (ties: higher threshold)."""
    clean = [row for row in table if row.near_miss.matched == 0 and row.unrelated.matched == 0]
    if clean:
        best = max(row.paraphrase.matched for row in clean)
        return max((row for row in clean if row.paraphrase.matched == best), key=lambda row: row.threshold)
    return min(table, key=lambda row: (row.near_miss.matched + row.unrelated.matched, -row.threshold))


def _embedder() -> Embedder:
    """The packaged MiniLM, whatever RAGKB_EMBED_MODEL says (its backend still follows the settings; the
    baseline records the identity, which names a non-torch backend)."""
    from ingest.config import DEFAULT_EMBED_MODEL
    from ingest.embedder import get_embedder

    return get_embedder(DEFAULT_EMBED_MODEL)


def embed_cosines(pairs: Sequence[Pair]) -> dict[str, float]:
    """Each pair's cosine similarity under the packaged model (normalised vectors: the dot product)."""
    embedder = _embedder()
    texts = sorted({pair.curated for pair in pairs} | {pair.asked for pair in pairs})
    vectors = embedder.embed(texts)
    row = {text: index for index, text in enumerate(texts)}
    return {pair.id: float(vectors[row[pair.curated]] @ vectors[row[pair.asked]]) for pair in pairs}


def _cell(count: Count) -> str:
    return f"{count.matched:>3}/{count.total:<3} {count.rate:6.1%}"


def print_table(title: str, table: Sequence[Figures]) -> None:
    print(title)
    print(f"{'threshold':>9}  {'paraphrase hits':>16}  {'near-miss false':>16}  {'unrelated false':>16}")
    for row in table:
        cells = "  ".join(f"{_cell(count):>16}" for count in (row.paraphrase, row.near_miss, row.unrelated))
        print(f"{row.threshold:>9.2f}  {cells}")


def print_spread(pairs: Sequence[Pair], cosines: Mapping[str, float]) -> None:
    """Where each kind's cosines lie: the overlap of paraphrases and near misses is what limits recall."""
    for kind in KINDS:
        values = sorted(cosines[pair.id] for pair in pairs if pair.kind == kind)
        if values:
            print(
                f"  {kind:<10} cosine min {values[0]:.3f}  median {statistics.median(values):.3f}  max {values[-1]:.3f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--split", choices=("tune", "check", "all"), default="tune")
    parser.add_argument("--guard", action="store_true", help="evaluate same_need (cosine and the lexical guard)")
    parser.add_argument("--choose", action="store_true", help="pick on tune, report on check, write the baseline")
    parser.add_argument("--write-splits", action="store_true", help="rewrite eval/splits/curated-pairs-*.txt")
    args = parser.parse_args(argv)
    try:
        pairs = load_pairs(args.pairs)
        if args.write_splits:
            for half, ids in make_splits(pairs).items():
                split_path(half).write_text("\n".join(ids) + "\n", encoding="utf-8")
                print(f"{split_path(half)}: {len(ids)} pair ids")
            return 0
        cosines = embed_cosines(pairs)
        label = "guarded" if args.guard else "cosine only"
        if not args.choose:
            chosen = select(pairs, args.split)
            table = sweep(chosen, cosines, guard=args.guard)
            print_table(f"{args.pairs.name}, split {args.split} ({len(chosen)} pairs), {label}", table)
            print_spread(chosen, cosines)
            return 0
        tune, check = select(pairs, "tune"), select(pairs, "check")
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tune_table = sweep(tune, cosines, guard=args.guard)
    print_table(f"{args.pairs.name}, split tune ({len(tune)} pairs), {label}", tune_table)
    print_spread(tune, cosines)
    # Both picks are made on tune only, then reported once on check; the baseline always holds both.
    plain = choose(sweep(tune, cosines))
    plain_check = figures(check, cosines, plain.threshold)
    guarded = choose_guarded(sweep(tune, cosines, guard=True))
    guarded_check = figures(check, cosines, guarded.threshold, guard=True)
    pick, held = (guarded, guarded_check) if args.guard else (plain, plain_check)
    print(f"\nchosen on tune ({label}): {pick.threshold:.2f}")
    print_table(f"check ({len(check)} pairs) at {pick.threshold:.2f}, {label}", [held])
    print_spread(check, cosines)
    command = "python -m eval.curated_match --choose --guard"
    if args.pairs.resolve() != DEFAULT_PAIRS:
        command += f" --pairs {args.pairs}"
    model = _embedder().identity
    baseline = {
        "kind": "curated-match",
        "dataset": args.pairs.name,
        "model": model,
        "rule": "same question_key, or server.review.matching.same_need(asked, curated, cosine, threshold): "
        "cosine >= threshold and no distinguishing terms",
        "choice": "lowest threshold in 0.50..0.98 with no near-miss and no unrelated false match on tune; "
        "equal tune paraphrase hits tie, ties to the higher threshold (else the fewest false matches, ties higher)",
        "threshold": guarded.threshold,
        "split": {"chosen_on": "tune", "reported_on": "check"},
        "tune": guarded.as_dict(),
        "check": guarded_check.as_dict(),
        "command": command,
        "unguarded": {
            "rule": "same question_key, or cosine >= threshold",
            "choice": "lowest threshold in 0.80..0.98 with no near-miss false match on tune "
            "(else the fewest, ties to the higher threshold)",
            "threshold": plain.threshold,
            "tune": plain.as_dict(),
            "check": plain_check.as_dict(),
            "command": command.replace(" --guard", ""),
        },
    }
    BASELINE.write_text(json.dumps(baseline, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {BASELINE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
