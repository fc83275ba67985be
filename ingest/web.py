"""Web pages: `ragkb ingest https://...` (one page each) and `ragkb crawl URL` (one site).

Security first: every request goes to an address checked after DNS resolution, and again after every
redirect; loopback, private, link-local (cloud metadata at 169.254.169.254 included), multicast, reserved
and unspecified addresses are refused unless `RAGKB_WEB_ALLOW_PRIVATE=true`. The connection is made to the
very address that was checked (the host name goes in the Host header and TLS SNI), so a DNS answer that
changes between check and connect (rebinding) cannot redirect it. Each page is bounded in bytes
(`RAGKB_WEB_MAX_BYTES`) and time (`RAGKB_WEB_TIMEOUT`).

A crawl stays on the start URL's origin (scheme, host, port), honours robots.txt (and its Crawl-delay),
seeds itself from the sitemap too, waits `RAGKB_WEB_DELAY` seconds between requests, and stops at a depth
and a page count. Re-crawls send the ETag / Last-Modified they were given (a 304 costs nothing) and the
pipeline skips pages whose content is unchanged; `--prune` deletes the site's pages that are gone.
Main text: trafilatura keeps an HTML page's article (headings, paragraphs, lists, tables) and leaves out its
navigation, header, footer, cookie banner and sidebars (`ingest/formats/webpage.py`); what is stored, and so
hashed for the unchanged-page check and kept as the page's original, is that main content.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.robotparser
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

from .config import Settings
from .errors import DocumentNotFound, IngestError
from .formats.webpage import main_content
from .loaders import supported_extensions
from .metrics import WEB_FETCHES, WEB_MAIN_TEXT
from .pipeline import Ingestor, IngestReport

log = logging.getLogger("ragkb.web")

MAX_REDIRECTS = 5
USER_AGENT = "ragkb-crawler/0.1"
_TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/csv": ".csv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/epub+zip": ".epub",
}

AddressPolicy = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


class BlockedAddress(IngestError):
    """A URL whose host resolves to an address ragkb does not fetch (loopback, private, metadata, ...)."""


class FetchFailed(IngestError):
    """A page could not be fetched: network error, HTTP error, too large, too slow, too many redirects."""


def public_only(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is one ragkb may fetch by default: a global unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _anything(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    etag: str = ""
    last_modified: str = ""


class Fetcher:
    """GET within the address policy, the size and the time limit, following redirects by hand."""

    def __init__(
        self, settings: Settings, *, policy: AddressPolicy | None = None, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.max_bytes, self.timeout = settings.web_max_bytes, settings.web_timeout
        self.policy = policy or (_anything if settings.web_allow_private else public_only)
        # No environment proxies (trust_env=False): a proxy would make the address check meaningless.
        self.client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False, verify=verify)

    def close(self) -> None:
        self.client.close()

    def _address(self, host: str, port: int, url: str, hop: int) -> str:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise FetchFailed(f"{url}: the host {host!r} cannot be resolved ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        refused = [a for a in addresses if not self.policy(a)]
        if refused or not addresses:
            where = " (after a redirect)" if hop else ""
            raise BlockedAddress(
                f"{url}: {host} resolves to {refused[0] if refused else 'nothing'}{where}, a loopback, private, "
                "link-local or otherwise non-public address; ragkb does not fetch those unless "
                "RAGKB_WEB_ALLOW_PRIVATE=true"
            )
        return str(addresses[0])

    def get(self, url: str, headers: dict[str, str] | None = None) -> Page:
        deadline = time.monotonic() + self.timeout
        for hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchFailed(f"{url}: only http and https URLs are fetched")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = self._address(parts.hostname, port, url, hop)
            literal = f"[{address}]" if ":" in address else address
            target = parts._replace(netloc=f"{literal}:{port}").geturl()
            sent = {"User-Agent": USER_AGENT, "Host": parts.netloc.rsplit("@", 1)[-1], **(headers or {})}
            try:
                with self.client.stream(
                    "GET", target, headers=sent, extensions={"sni_hostname": parts.hostname}
                ) as response:
                    if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    body = self._read(response, url, deadline)
                    return Page(
                        url=url,
                        status=response.status_code,
                        content_type=response.headers.get("content-type", "").split(";")[0].strip().lower(),
                        body=body,
                        etag=response.headers.get("etag", ""),
                        last_modified=response.headers.get("last-modified", ""),
                    )
            except httpx.HTTPError as exc:
                raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from None
        raise FetchFailed(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _read(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchFailed(f"{url}: {declared} bytes, over the {self.max_bytes:,}-byte limit (RAGKB_WEB_MAX_BYTES)")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchFailed(f"{url}: over the {self.max_bytes:,}-byte limit (RAGKB_WEB_MAX_BYTES)")
            if time.monotonic() > deadline:
                raise FetchFailed(f"{url}: took longer than {self.timeout:g} s (RAGKB_WEB_TIMEOUT)")
            chunks.append(chunk)
        return b"".join(chunks)


def file_name(page: Page) -> str | None:
    """The name the loader is picked by: from the content type, else the URL path's extension."""
    suffix = _TYPES.get(page.content_type)
    if suffix is None:
        path_suffix = Path(urlsplit(page.url).path).suffix.lower()
        suffix = path_suffix if path_suffix in supported_extensions() else None
    if suffix is None:
        return None
    stem = Path(urlsplit(page.url).path).stem or "index"
    return f"{stem}{suffix}"


def links(page: Page) -> list[str]:
    """The absolute http(s) links of an HTML page, without fragments, in order, each once."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.body, "lxml")
    base = soup.find("base", href=True)
    root = urljoin(page.url, str(base["href"])) if base is not None else page.url
    seen: dict[str, None] = {}
    for anchor in soup.find_all("a", href=True):
        target = urldefrag(urljoin(root, str(anchor["href"]).strip()))[0]
        if urlsplit(target).scheme in ("http", "https"):
            seen.setdefault(target, None)
    return list(seen)


def _is_html(page: Page) -> bool:
    return page.content_type in ("text/html", "application/xhtml+xml")


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class Validators:
    """The ETag and Last-Modified each URL of a collection was last served with (for conditional GETs)."""

    def __init__(self, settings: Settings, collection: str) -> None:
        self.path = settings.data_dir / "web" / f"{collection}.json"
        try:
            self.values: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.values = {}

    def headers(self, url: str) -> dict[str, str]:
        known = self.values.get(url, {})
        sent = {"If-None-Match": known["etag"]} if known.get("etag") else {}
        if known.get("last_modified"):
            sent["If-Modified-Since"] = known["last_modified"]
        return sent

    def remember(self, page: Page, links: list[str]) -> None:
        """Keep the page's validators and its links: a 304 answer has no body to find the links in."""
        if page.etag or page.last_modified:
            self.values[page.url] = {"etag": page.etag, "last_modified": page.last_modified, "links": links}

    def links(self, url: str) -> list[str]:
        return [str(link) for link in self.values.get(url, {}).get("links", [])]

    def forget(self, url: str) -> None:
        self.values.pop(url, None)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.values, indent=1, sort_keys=True))
        temporary.replace(self.path)


class WebIngest:
    """Fetches pages and hands them to the `Ingestor` as (name, URL, bytes): the URL is the source."""

    def __init__(self, ingestor: Ingestor, *, fetcher: Fetcher | None = None) -> None:
        self.ingestor, self.settings = ingestor, ingestor.settings
        self.fetcher = fetcher or Fetcher(self.settings)

    def ingest_urls(self, urls: Iterable[str], *, collection: str) -> IngestReport:
        report = IngestReport(collection=collection)
        validators = Validators(self.settings, collection)
        for url in urls:
            self._one(url, collection, report, validators)
        validators.save()
        return report

    def _one(self, url: str, collection: str, report: IngestReport, validators: Validators) -> Page | None:
        """Fetch and ingest one page into `report`; the page (None if it could not be fetched)."""
        try:
            page = self.fetcher.get(url, validators.headers(url))
        except IngestError as exc:
            WEB_FETCHES.labels(outcome="blocked" if isinstance(exc, BlockedAddress) else "failed").inc()
            report.fail(url, str(exc))
            return None
        outcome = "not_modified" if page.status == 304 else "http_error" if page.status >= 400 else "ok"
        WEB_FETCHES.labels(outcome=outcome).inc()
        if page.status == 304:
            report.unchanged += 1
            return page
        if page.status in (404, 410):
            report.fail(url, f"{url}: HTTP {page.status} (gone)")
            return page
        if page.status >= 400:
            report.fail(url, f"{url}: HTTP {page.status}")
            return page
        name = file_name(page)
        if name is None:
            report.skipped += 1
            report.warnings.append(f"{url}: {page.content_type or 'no content type'} is not a type ragkb reads")
            return page
        body = page.body
        if _is_html(page):
            main = main_content(page.body, page.url)
            WEB_MAIN_TEXT.labels(outcome="main" if main else "whole").inc()
            body = main or page.body
        part = self.ingestor.ingest_items([(name, page.url, body)], collection=collection)
        _merge(report, part)
        if part.failed == 0:
            validators.remember(page, links(page) if _is_html(page) else [])
        return page

    def crawl(
        self, start: str, *, collection: str, depth: int = 2, max_pages: int = 100, prune: bool = False
    ) -> IngestReport:
        report = IngestReport(collection=collection)
        validators = Validators(self.settings, collection)
        origin = _origin(start)
        robots = self._robots(start)
        delay = max(self.settings.web_delay, float(robots.crawl_delay(USER_AGENT) or 0))
        queue: deque[tuple[str, int]] = deque([(urldefrag(start)[0], 0)])
        queue.extend((url, 1) for url in self._sitemap(start, robots) if _origin(url) == origin)
        seen: set[str] = set()
        gone: list[str] = []
        fetched, truncated = 0, False
        while queue:
            url, level = queue.popleft()
            if url in seen:
                continue
            seen.add(url)
            if not robots.can_fetch(USER_AGENT, url):
                report.warnings.append(f"{url}: disallowed by robots.txt")
                continue
            if fetched >= max_pages:
                truncated = True
                break
            if fetched:
                time.sleep(delay)
            fetched += 1
            page = self._one(url, collection, report, validators)
            if page is None:
                continue
            if page.status in (404, 410):
                gone.append(url)
                continue
            if page.status == 304:
                found = validators.links(page.url)
            elif _is_html(page) and page.status < 300:
                found = links(page)
            else:
                continue
            found = [link for link in found if _origin(link) == origin]
            if level < depth:
                queue.extend((link, level + 1) for link in found)
            elif any(link not in seen for link in found):
                truncated = True
        validators.save()
        if prune:
            self._prune(collection, start, seen, gone, truncated, report, validators)
        if truncated:
            report.warnings.append(f"stopped at the limits (depth {depth}, {max_pages} pages): the site has more")
        return report

    def _robots(self, start: str) -> urllib.robotparser.RobotFileParser:
        parser = urllib.robotparser.RobotFileParser()
        url = urljoin(start, "/robots.txt")
        try:
            page = self.fetcher.get(url)
        except BlockedAddress:
            raise  # the start URL's own host: the crawl is refused, not empty
        except IngestError as exc:
            log.warning("robots.txt unreachable; crawling nothing", extra={"url": url, "error": str(exc)})
            parser.parse(["User-agent: *", "Disallow: /"])
            return parser
        if page.status >= 500:
            parser.parse(["User-agent: *", "Disallow: /"])  # RFC 9309: an unreachable robots.txt disallows all
        elif page.status < 400:
            parser.parse(page.body.decode("utf-8", "replace").splitlines())
        else:
            parser.parse([])  # no robots.txt: everything is allowed
        return parser

    def _sitemap(self, start: str, robots: urllib.robotparser.RobotFileParser) -> list[str]:
        from .formats.base import local, parse_xml

        candidates = list(robots.site_maps() or []) or [urljoin(start, "/sitemap.xml")]
        found: list[str] = []
        for url in candidates[:5]:
            if _origin(url) != _origin(start):
                continue
            try:
                page = self.fetcher.get(url)
                if page.status != 200:
                    continue
                root = parse_xml(page.body, url, "sitemap")
            except IngestError:
                continue
            found.extend(str(el.text).strip() for el in root.iter() if local(el.tag) == "loc" and el.text)
        return found[:10_000]

    def _prune(
        self,
        collection: str,
        start: str,
        seen: set[str],
        gone: list[str],
        truncated: bool,
        report: IngestReport,
        validators: Validators,
    ) -> None:
        """Delete the site's pages that answered 404/410, and (after a crawl that reached every page it
        could) those no longer linked from the site."""
        scheme, host, port = _origin(start)
        target = self.ingestor.open_collection(collection)
        for document in self.ingestor.store.documents(target):
            source = document.source
            if not source.startswith(("http://", "https://")) or _origin(source) != (scheme, host, port):
                continue
            if source in gone or (not truncated and source not in seen):
                try:
                    self.ingestor.delete(collection, source)
                except DocumentNotFound:
                    continue
                validators.forget(source)
                report.deleted += 1
        validators.save()


def _merge(report: IngestReport, part: IngestReport) -> None:
    report.added += part.added
    report.updated += part.updated
    report.unchanged += part.unchanged
    report.failed += part.failed
    report.chunks_added += part.chunks_added
    report.tokens_embedded += part.tokens_embedded
    report.failures.extend(part.failures)
    report.warnings.extend(part.warnings)
    report.documents.extend(part.documents)
