"""Web-page main text: boilerplate indexed and article kept, before (the HTML loader on the whole page) and
after (trafilatura's main content, then the HTML loader: what `ragkb ingest URL` / `ragkb crawl` store).

    python -m eval.bench_web [--pages DIR] [--truth CSS] [--limit N]

Each page's ground truth is the elements the CSS selector picks (default `[data-truth=article]`, how the
pages of tests/data/web/ mark their article; `main` suits mdBook or other sites that wrap the article in it).
Words are lower-cased `\\w+` tokens, counted once per page. Article words: those of the truth elements.
Boilerplate words: those of the rest of the page's body (scripts and styles aside) that the article does not
have. Reported per page and in all: boilerplate words indexed (and their share of the page's boilerplate
words) and the share of article words kept. No tuning happens here: trafilatura runs with the settings
`ingest/formats/webpage.py` fixes.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from ingest.formats.webpage import main_content
from ingest.loaders import load_bytes

DEFAULT_PAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "web"
TRUTH = "[data-truth=article]"


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@dataclass(frozen=True, slots=True)
class Truth:
    article: set[str]
    boilerplate: set[str]


def truth_of(data: bytes, selector: str = TRUTH) -> Truth:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    marked = soup.select(selector)
    if not marked:
        raise ValueError(f"no element matches {selector!r}: the page has no ground truth")
    article = set().union(*(words(element.get_text(" ")) for element in marked))
    for element in marked:
        element.decompose()
    return Truth(article, words(soup.get_text(" ")) - article)


def stored_text(data: bytes, url: str, *, main_text: bool) -> str:
    """The text ragkb stores for a fetched HTML page: with `main_text` as `ingest/web.py` does now, without
    as it did before (the HTML loader on the whole page)."""
    body = (main_content(data, url) or data) if main_text else data
    return load_bytes(body, "page.html").text


@dataclass(frozen=True, slots=True)
class Row:
    page: str
    boilerplate: int
    article: int
    boilerplate_before: int
    boilerplate_after: int
    kept_before: int
    kept_after: int


def measure(pages: dict[str, bytes], selector: str = TRUTH) -> list[Row]:
    rows = []
    for name, data in sorted(pages.items()):
        try:
            truth = truth_of(data, selector)
        except ValueError:
            continue  # a page without an article (a redirect stub, an index): nothing to measure
        before = words(stored_text(data, f"http://site.test/{name}", main_text=False))
        after = words(stored_text(data, f"http://site.test/{name}", main_text=True))
        rows.append(
            Row(name, len(truth.boilerplate), len(truth.article), len(truth.boilerplate & before),
                len(truth.boilerplate & after), len(truth.article & before), len(truth.article & after))
        )  # fmt: skip
    return rows


def total(rows: list[Row]) -> Row:
    return Row(
        "all pages",
        sum(r.boilerplate for r in rows),
        sum(r.article for r in rows),
        sum(r.boilerplate_before for r in rows),
        sum(r.boilerplate_after for r in rows),
        sum(r.kept_before for r in rows),
        sum(r.kept_after for r in rows),
    )


def report(rows: list[Row]) -> str:
    head = f"{'page':40} {'boilerplate words indexed':>27} {'article words kept':>22}"
    sub = f"{'':40} {'words':>7} {'before':>9} {'after':>9} {'words':>6} {'before':>7} {'after':>7}"
    lines = [head, sub]
    for r in [*rows, total(rows)]:
        noise, words_in = max(r.boilerplate, 1), max(r.article, 1)
        lines.append(
            f"{r.page[:40]:40} {r.boilerplate:7d} {r.boilerplate_before:4d} {r.boilerplate_before / noise:4.2f}"
            f" {r.boilerplate_after:4d} {r.boilerplate_after / noise:4.2f} {r.article:6d}"
            f" {r.kept_before / words_in:7.3f} {r.kept_after / words_in:7.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=Path, default=DEFAULT_PAGES, help="a folder of .html pages")
    parser.add_argument("--truth", default=TRUTH, help="CSS selector of each page's article (ground truth)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many pages (sorted by path), 0 = all")
    args = parser.parse_args()
    paths = sorted(args.pages.rglob("*.html"))
    pages = {str(p.relative_to(args.pages)): p.read_bytes() for p in paths}
    if args.limit:
        pages = dict(list(pages.items())[: args.limit])
    rows = measure(pages, args.truth)
    print(report(rows))
    print(f"{len(rows)} of {len(pages)} pages have an element matching {args.truth!r} (the others are left out)")


if __name__ == "__main__":
    main()
