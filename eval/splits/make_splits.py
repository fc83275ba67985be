"""Write the fixed tuning and check halves of a BEIR split's queries (one id per line, committed).

    python -m eval.splits.make_splits ../shared/datasets/scifact-train --split train

Query ids are sorted, shuffled with `random.Random(2026)` and cut in two: the first half is for tuning,
the second for reporting. Re-running it reproduces the same files.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from eval.beir import read_qrels, read_queries

SEED = 2026
HERE = Path(__file__).resolve().parent


def halves(dataset: Path, split: str) -> tuple[list[str], list[str]]:
    queries = read_queries(dataset)
    ids = sorted(q for q in read_qrels(dataset, split) if q in queries)
    random.Random(SEED).shuffle(ids)
    middle = (len(ids) + 1) // 2
    return sorted(ids[:middle]), sorted(ids[middle:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    tune, check = halves(args.dataset, args.split)
    name = f"{args.dataset.resolve().name}"
    for half, ids in (("tune", tune), ("check", check)):
        (HERE / f"{name}-{half}.txt").write_text("\n".join(ids) + "\n")
    print(f"{name}: {len(tune)} tune, {len(check)} check query ids written to {HERE}")


if __name__ == "__main__":
    main()
