"""Web pages and crawls against a real local HTTP server (loopback allowed explicitly by the tests that need
it): SSRF refusals after DNS and after redirects, size limits, robots.txt, sitemap, depth and page limits,
conditional re-crawls and --prune."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingest.config import Settings, get_settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.web import BlockedAddress, Fetcher, FetchFailed, WebIngest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _html(title: str, body: str, links: list[str] = []) -> bytes:  # noqa: B006 - read only
    anchors = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
    return (
        f"<html><head><title>{title}</title></head><body><nav><ul>{anchors}</ul></nav>"
        f"<h1>{title}</h1><p>{body}</p></body></html>"
    ).encode()


@dataclass
class Site:
    pages: dict[str, tuple[int, str, bytes, str]] = field(default_factory=dict)  # path: status, type, body, etag
    requests: list[tuple[str, int]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, kind, body, etag = state.pages.get(self.path, (404, "text/plain", b"not found", ""))
            # recorded before answering: the client may act on the answer before this thread goes on
            if status == 302:
                state.requests.append((self.path, 302))
                self.send_response(302)
                self.send_header("Location", body.decode())
                self.end_headers()
                return
            if etag and self.headers.get("If-None-Match") == etag:
                state.requests.append((self.path, 304))
                self.send_response(304)
                self.end_headers()
                return
            state.requests.append((self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            if etag:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://[fd00:ec2::254]/",
    ],
)
def test_non_public_addresses_are_refused_by_default(tmp_path: Path, url: str) -> None:
    fetcher = Fetcher(Settings(data_dir=tmp_path))
    with pytest.raises(BlockedAddress, match="RAGKB_WEB_ALLOW_PRIVATE"):
        fetcher.get(url)


def test_only_http_and_https(tmp_path: Path) -> None:
    fetcher = Fetcher(Settings(data_dir=tmp_path))
    for url in ("file:///etc/passwd", "ftp://example.com/x", "gopher://x/"):
        with pytest.raises(FetchFailed, match="only http and https"):
            fetcher.get(url)


def test_a_redirect_is_checked_again(tmp_path: Path, site: Site) -> None:
    site.pages["/jump"] = (302, "", f"http://127.0.0.2:{site.port}/inside".encode(), "")
    only_this = ipaddress.ip_address("127.0.0.1")
    fetcher = Fetcher(Settings(data_dir=tmp_path), policy=lambda address: address == only_this)
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.2 \(after a redirect\)"):
        fetcher.get(f"{site.url}/jump")
    assert site.requests == [("/jump", 302)]


def test_pages_are_bounded_in_size(tmp_path: Path, site: Site) -> None:
    site.pages["/big"] = (200, "text/html", b"<p>" + b"x" * 300_000 + b"</p>", "")
    fetcher = Fetcher(Settings(data_dir=tmp_path, web_allow_private=True, web_max_bytes=100_000))
    with pytest.raises(FetchFailed, match="over the 100,000-byte limit"):
        fetcher.get(f"{site.url}/big")


def _build_site(site: Site) -> None:
    pdf = (SHARED / "pdfs" / "docling" / "amt_handbook_sample.pdf").read_bytes()
    pages = {
        "/": ("Home", "Welcome to the team wiki.", ["/a.html", "/b.html", "/private/secret.html", "/handbook.pdf",
                                                    "https://example.com/elsewhere"]),
        "/a.html": ("Onboarding", "New staff get a laptop on day one.", ["/deep.html", "/"]),
        "/b.html": ("Deploys", "Deploys happen on Tuesdays.", ["/"]),
        "/c.html": ("Only in the sitemap", "The coffee machine is on floor 3.", []),
        "/deep.html": ("Deep", "Two links from home.", ["/deeper.html"]),
        "/deeper.html": ("Deeper", "Three links from home.", []),
        "/private/secret.html": ("Secret", "Robots say no.", []),
    }  # fmt: skip
    for path, (title, body, links) in pages.items():
        site.pages[path] = (200, "text/html; charset=utf-8", _html(title, body, links), f'"{path}-1"')
    site.pages["/handbook.pdf"] = (200, "application/pdf", pdf, "")
    site.pages["/robots.txt"] = (200, "text/plain", b"User-agent: *\nDisallow: /private/\n", "")
    sitemap = (
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{site.url}/c.html</loc></url></urlset>'
    )
    site.pages["/sitemap.xml"] = (200, "application/xml", sitemap.encode(), "")


@pytest.mark.slow
def test_crawl_recrawl_and_prune(tmp_path: Path, site: Site, embedder: Embedder) -> None:
    _build_site(site)
    settings = Settings(data_dir=tmp_path / "kb", web_allow_private=True, web_delay=0)
    ingestor = Ingestor(settings, embedder=embedder)
    web = WebIngest(ingestor)
    report = web.crawl(f"{site.url}/", collection="wiki", depth=2, max_pages=50)
    stored = {d.source.removeprefix(site.url) for d in ingestor.store.documents(ingestor.open_collection("wiki"))}
    assert stored == {"/", "/a.html", "/b.html", "/c.html", "/deep.html", "/handbook.pdf"}, report.as_dict()
    assert report.failed == 0 and report.added == 6
    assert any("disallowed by robots.txt" in w for w in report.warnings)
    assert any("stopped at the limits" in w for w in report.warnings)  # /deeper.html is past depth 2
    assert ("/private/secret.html", 200) not in site.requests
    pdf_pages = {
        c.metadata.get("page")
        for page in ingestor.store.iter_chunks(ingestor.open_collection("wiki"))
        for c in page
        if str(c.metadata["source"]).endswith(".pdf")
    }
    assert pdf_pages == {1}

    site.requests.clear()
    again = web.crawl(f"{site.url}/", collection="wiki", depth=2, max_pages=50)
    assert (again.added, again.updated, again.unchanged, again.failed) == (0, 0, 6, 0)
    assert ("/a.html", 304) in site.requests  # the ETag was sent back; nothing was downloaded

    site.pages["/b.html"] = (200, "text/html", _html("Deploys", "Deploys moved to Thursdays.", ["/"]), '"/b.html-2"')
    del site.pages["/c.html"]
    site.pages["/sitemap.xml"] = (200, "application/xml", b'<urlset xmlns="x"></urlset>', "")
    third = web.crawl(f"{site.url}/", collection="wiki", depth=2, max_pages=50, prune=True)
    assert (third.updated, third.deleted) == (1, 0), "a truncated crawl prunes only what answered 404/410"
    fourth = web.crawl(f"{site.url}/", collection="wiki", depth=5, max_pages=50, prune=True)
    stored = {d.source.removeprefix(site.url) for d in ingestor.store.documents(ingestor.open_collection("wiki"))}
    assert fourth.deleted == 1 and "/c.html" not in stored and "/deeper.html" in stored


@pytest.mark.slow
def test_page_limit_and_gone_pages(tmp_path: Path, site: Site, embedder: Embedder) -> None:
    _build_site(site)
    settings = Settings(data_dir=tmp_path / "kb", web_allow_private=True, web_delay=0)
    ingestor = Ingestor(settings, embedder=embedder)
    report = WebIngest(ingestor).crawl(f"{site.url}/", collection="wiki", depth=3, max_pages=2)
    assert report.added == 2 and any("stopped at the limits" in w for w in report.warnings)
    single = WebIngest(ingestor).ingest_urls([f"{site.url}/nothere.html", f"{site.url}/b.html"], collection="one")
    assert (single.added, single.failed) == (1, 1)
    assert "HTTP 404" in single.failures[0].error
    from prometheus_client import REGISTRY

    blocked = REGISTRY.get_sample_value("ragkb_web_fetches_total", {"outcome": "blocked"}) or 0.0
    strict = Ingestor(Settings(data_dir=tmp_path / "kb2"), embedder=embedder)  # loopback not allowed
    refused = WebIngest(strict).ingest_urls([f"{site.url}/b.html"], collection="one")
    assert refused.failed == 1 and "RAGKB_WEB_ALLOW_PRIVATE" in refused.failures[0].error
    assert REGISTRY.get_sample_value("ragkb_web_fetches_total", {"outcome": "blocked"}) == blocked + 1


@pytest.mark.slow
def test_cli_ingests_a_page_by_url(cli_env: Path, site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ragkb.cli import app

    _build_site(site)
    monkeypatch.setenv("RAGKB_WEB_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["ingest", f"{site.url}/a.html", "--collection", "pages", "--json"])
    assert result.exit_code == 0, result.output
    assert '"added": 1' in result.output
    monkeypatch.setenv("RAGKB_WEB_ALLOW_PRIVATE", "false")
    get_settings.cache_clear()
    refused = CliRunner().invoke(app, ["crawl", f"{site.url}/", "--collection", "pages"])
    assert refused.exit_code != 0 and "RAGKB_WEB_ALLOW_PRIVATE" in refused.output


PAGES = Path(__file__).resolve().parent / "data" / "web"  # realistic pages: cookie banners, menus, sidebars, footers


@pytest.mark.slow
def test_crawl_keeps_the_article_and_leaves_the_boilerplate(tmp_path: Path, site: Site, embedder: Embedder) -> None:
    """The stored chunks of each page hold its article (headings as the heading path, tables as labelled rows)
    and not its navigation, banners, sidebars or footer; measured as eval/bench_web.py does, from the chunks."""
    from eval.bench_web import truth_of, words

    pages = {f"/{p.name}": p.read_bytes() for p in sorted(PAGES.glob("*.html"))}
    index = _html("Site", "All the pages of this site.", list(pages))
    site.pages["/"] = (200, "text/html", index, "")
    for path, body in pages.items():
        site.pages[path] = (200, "text/html; charset=utf-8", body, "")
    settings = Settings(data_dir=tmp_path / "kb", web_allow_private=True, web_delay=0)
    ingestor = Ingestor(settings, embedder=embedder)
    web = WebIngest(ingestor)
    from prometheus_client import REGISTRY

    def read(outcome: str) -> float:
        return REGISTRY.get_sample_value("ragkb_web_main_text_total", {"outcome": outcome}) or 0.0

    main, whole = read("main"), read("whole")
    report = web.crawl(f"{site.url}/", collection="site", depth=1, max_pages=10)
    assert (report.added, report.failed) == (5, 0), report.as_dict()
    assert (read("main") - main, read("whole") - whole) == (4, 1)  # the four articles; the short index page whole
    target = ingestor.open_collection("site")
    texts: dict[str, list[str]] = {}
    for batch in ingestor.store.iter_chunks(target):
        for chunk in batch:
            texts.setdefault(str(chunk.metadata["source"]).removeprefix(site.url), []).append(chunk.text)
    boilerplate = indexed = article = kept = 0
    for path, body in pages.items():
        truth, stored = truth_of(body), words(" ".join(texts[path]))
        boilerplate, indexed = boilerplate + len(truth.boilerplate), indexed + len(truth.boilerplate & stored)
        article, kept = article + len(truth.article), kept + len(truth.article & stored)
    assert indexed / boilerplate <= 0.10, f"{indexed} of {boilerplate} boilerplate words indexed"
    assert kept / article >= 0.95, f"{kept} of {article} article words kept"
    runbook = {c.metadata.get("heading"): c.text for b in ingestor.store.iter_chunks(target) for c in b
               if str(c.metadata["source"]).endswith("/runbook.html")}  # fmt: skip
    owners = runbook["Rotating TLS certificates > Certificate owners"]
    assert "Service: shop.example.com; Owner: Payments team; Renewal window: Thursday evening" in owners
    titles = {d.source.removeprefix(site.url): d.title for d in ingestor.store.documents(target)}
    assert titles["/wiki.html"] == "Office move to Harbour Street"

    # what is stored is the main text: a page whose boilerplate alone changed is unchanged on a re-crawl
    blog = pages["/blog.html"].replace(b"&copy; 2026 The Tooling Blog", b"&copy; 2027 The Tooling Blog")
    site.pages["/blog.html"] = (200, "text/html; charset=utf-8", blog, "")
    again = web.crawl(f"{site.url}/", collection="site", depth=1, max_pages=10)
    assert (again.unchanged, again.updated, again.added) == (5, 0, 0), again.as_dict()


def test_a_short_page_is_read_whole_by_the_html_loader() -> None:
    """Below what trafilatura judges by, its output would keep the menu: the page is read whole instead."""
    from ingest.formats.webpage import main_content

    small = _html("Home", "Welcome to the team wiki.", ["/a.html", "/b.html"])
    assert main_content(small, "http://site.test/") is None
    assert main_content(b"\x00\x01 not html at all", "http://site.test/") is None
    article = (PAGES / "news.html").read_bytes()
    extracted = main_content(article, "http://site.test/news.html")
    assert extracted is not None and b"tram line" in extracted and b"Most read" not in extracted


def test_local_html_tables_are_labelled_rows_and_layout_tables_are_read_cell_by_cell() -> None:
    from ingest.loaders import load_bytes

    data = (
        b"<html><body><h1>Rota \xc2\xb6</h1><table><tr><th>Week</th><th>Engineer</th></tr>"
        b"<tr><td>10</td><td>Ana</td></tr><tr><td>11</td><td>Erik</td></tr></table>"
        b"<table><tr><td><h2>Layout</h2><p>A page laid out in a table.</p></td><td><p>Second column.</p></td></tr>"
        b"</table></body></html>"
    )
    doc = load_bytes(data, "rota.html")
    blocks = doc.text.split("\n\n")
    assert "Week: 10; Engineer: Ana" in blocks and "Week: 11; Engineer: Erik" in blocks
    assert [s.heading for s in doc.sections] == ["Rota", "Rota > Layout"]  # the permalink mark is not a heading's
    assert "Second column." in blocks


def _certificate(tmp_path: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `host` signed by it (cryptography, as a real CA would make them)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ragkb test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.mark.parametrize(("certified", "ok"), [("localhost", True), ("other.example", False)])
def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    tmp_path: Path, certified: str, ok: bool
) -> None:
    import ssl

    ca, cert, key = _certificate(tmp_path, certified)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = _html("Secure", f"Host header {self.headers.get('Host')}.")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        trust = ssl.create_default_context(cafile=str(ca))
        fetcher = Fetcher(Settings(data_dir=tmp_path, web_allow_private=True), verify=trust)
        url = f"https://localhost:{server.server_address[1]}/"
        if ok:
            page = fetcher.get(url)
            assert page.status == 200 and f"Host header localhost:{server.server_address[1]}" in page.body.decode()
        else:
            with pytest.raises(FetchFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                fetcher.get(url)
    finally:
        server.shutdown()
        server.server_close()
