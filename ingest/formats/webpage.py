"""The main text of a fetched web page, through trafilatura (Apache-2.0), the library made for it: navigation,
headers, footers, cookie banners, sidebars and comment threads are left out; headings, paragraphs, lists and
tables are kept, as a small HTML document that the HTML loader then reads like any other (headings become
the heading path, tables labelled rows). Used by `ingest/web.py` for the pages it fetches; local `.html`
files keep the HTML loader (docs/ingestion.md says why).

trafilatura's main extractor needs some text to judge by: when it finds less than `MIN_MAIN_CHARS` (its own
`min_extracted_size`), what it returns comes from its baseline, which keeps menus; then the page is read
whole by the HTML loader instead (`main_content` returns None). Nothing here fetches anything: trafilatura
gets the bytes already fetched within ragkb's limits, and its extraction timeout (a SIGALRM that works only in
a main thread) is off; a page is at most RAGKB_WEB_MAX_BYTES.
"""

from __future__ import annotations

import html
import logging
from functools import lru_cache
from typing import Any

from .base import reason

log = logging.getLogger("ragkb.web")

MIN_MAIN_CHARS = 250


@lru_cache(maxsize=1)
def _config() -> Any:
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    return config


# trafilatura's XML (well-formed, unlike its HTML output, which puts inline code in <pre> inside <p>) as HTML.
_TAGS = {"p": "p", "list": "ul", "item": "li", "table": "table", "row": "tr", "quote": "blockquote", "lb": "br",
         "hi": "span", "ref": "span", "del": "del", "label": "span"}  # fmt: skip
_DROPPED = {"comments", "graphic", "fw", "note"}


def _as_html(element: Any, *, block: bool) -> None:
    """Rename trafilatura's XML elements to HTML in place (attributes dropped; code inside a block is inline)."""
    tag = str(element.tag)
    rend = str(element.get("rend") or "")
    if tag == "head":
        element.tag = rend if rend in ("h1", "h2", "h3", "h4", "h5", "h6") else "h2"
    elif tag == "cell":
        element.tag = "th" if element.get("role") == "head" else "td"
    elif tag == "code":
        element.tag = "pre" if block else "code"
    elif tag == "list" and rend == "ol":
        element.tag = "ol"
    else:
        element.tag = _TAGS.get(tag, "div" if block else "span")
    element.attrib.clear()
    for child in list(element):
        if str(child.tag) in _DROPPED:
            element.remove(child)  # its tail text goes with it: these hold no text of the article
            continue
        _as_html(child, block=tag in ("main", "doc", "quote", "item", "cell") or element.tag == "div")


def main_content(data: bytes, url: str) -> bytes | None:
    """The page's main content as HTML (its title, then headings, paragraphs, lists and tables), or None when
    trafilatura finds too little to trust or cannot read the page (the caller then keeps the page whole)."""
    import trafilatura
    from lxml import etree

    try:
        tree = trafilatura.load_html(data)
        if tree is None:
            return None
        metadata = trafilatura.extract_metadata(tree)
        title = (metadata.title if metadata is not None else None) or ""
        found = trafilatura.extract(
            data,
            url=url,
            output_format="xml",
            include_tables=True,
            include_formatting=True,
            include_comments=False,
            include_images=False,
            include_links=False,
            config=_config(),
        )
        if not found:
            return None
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        main = etree.fromstring(found.encode("utf-8"), parser).find("main")
        if main is None or len(" ".join("".join(main.itertext()).split())) < MIN_MAIN_CHARS:
            return None
        for child in list(main):
            if str(child.tag) in _DROPPED:
                main.remove(child)
            else:
                _as_html(child, block=True)
        inner = "".join(etree.tostring(child, method="html", encoding="unicode") for child in main)
    except MemoryError:
        raise
    except Exception as exc:  # a page trafilatura cannot read is read whole, as before
        log.warning("main-text extraction failed; the page is read whole", extra={"url": url, "error": reason(exc)})
        return None
    head = f"<title>{html.escape(title)}</title>" if title else ""
    return f'<html><head><meta charset="utf-8">{head}</head><body>{inner}</body></html>'.encode()
