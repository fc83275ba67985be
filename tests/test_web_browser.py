"""The web page's journeys in a real browser: headless Debian Chromium driven by Selenium, against the real
app (uvicorn on loopback, real Chroma, the real model, the extractive provider), with real files.

Each journey saves a screenshot under reports/ui/ for a person to look at. One browser for the module.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.service import QueryService
from server.http.api import create_app

from .browser import LiveServer, chrome, console_errors, ready, screenshot, sign_in, wait_until
from .helpers import reader_for, truncated_pdf

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"\[[\d, ]+\]")
HOSTILE = (
    "# Hostile notes\n\nThe launch code word is <script>window.__pwned = 1</script> pineapple, "
    'and the backup word is <img src=x onerror="window.__pwned = 2"> mango.\n'
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, shared_pdfs: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("web-files")
    hostile = folder / "hostile.md"
    hostile.write_text(HOSTILE)
    broken = folder / "broken.pdf"
    broken.write_bytes(truncated_pdf(shared_pdfs / "docling" / "multi_page.pdf"))
    unsupported = folder / "tool.exe"
    unsupported.write_bytes(b"MZ\x90\x00 not a document")
    big = folder / "big.txt"
    big.write_text("A line of a very long text file.\n" * 50_000)  # 1.7 MB: over the keyed server's 1 MB limit
    return {
        "multi_page": shared_pdfs / "docling" / "multi_page.pdf",
        "handbook": shared_pdfs / "docling" / "amt_handbook_sample.pdf",
        "hostile": hostile,
        "broken": broken,
        "unsupported": unsupported,
        "big": big,
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, files: dict[str, Path]) -> QueryService:
    settings = Settings(data_dir=tmp_path_factory.mktemp("web-kb"), default_collection="demo")
    ingestor = Ingestor(settings, embedder=embedder)
    report = ingestor.ingest_paths([REPO / "data" / "guides", files["multi_page"], files["hostile"]], collection="demo")
    assert report.failed == 0, report.failures
    ingestor.ingest_paths([REPO / "data" / "guides" / "installing-ragkb.md"], collection="held")
    return QueryService(settings, reader=reader_for(ingestor))


@pytest.fixture(scope="module")
def open_server(service: QueryService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The loopback demo: no API key exists (its own state database), so nobody signs in."""
    state = tmp_path_factory.mktemp("web-open") / "state.sqlite3"
    settings = service.settings.model_copy(update={"database_url": f"sqlite:///{state}"})
    with LiveServer(create_app(settings, service)) as live:
        yield live


@pytest.fixture(scope="module")
def keyed(service: QueryService) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """A server with API keys: admin, writer, reader (every request needs one)."""
    app = create_app(service.settings.model_copy(update={"max_upload_bytes": 1_000_000}), service)
    with LiveServer(app) as live:
        keys = app.state.components.keys
        scopes = {"admin": "admin", "writer": "write", "reader": "read", "reviewer": "review"}
        tokens = {name: keys.create(name, scope, None)[1] for name, scope in scopes.items()}
        yield live, tokens


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    browser = chrome()
    try:
        yield browser
    finally:
        browser.quit()


def _open(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait_until(driver, ready, what="the page's script to finish starting")


def _ask(driver: WebDriver, question: str) -> dict[str, object]:
    """Type the question and press Enter; returns what the page saw while the answer streamed in."""
    driver.execute_script(
        """window.__shift = 0;
        new PerformanceObserver((list) => list.getEntries().forEach((e) => { window.__shift += e.value; }))
          .observe({type: 'layout-shift'});
        window.__streamed = 0;
        const answer = document.getElementById('answer');
        new MutationObserver((records) => {
          if (answer.getAttribute('aria-busy') === 'true')
            records.forEach((r) => { window.__streamed += r.addedNodes.length; });
        }).observe(answer, {childList: true});"""
    )
    box = driver.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    box.send_keys(Keys.ENTER)
    wait_until(
        driver,
        lambda d: (
            d.find_element(By.ID, "answer").get_attribute("aria-busy") == "false"
            and d.find_element(By.ID, "feedback").is_displayed()
        ),
        what="the answer to finish",
    )
    return {
        "streamed": driver.execute_script("return window.__streamed"),
        "shift": driver.execute_script("return window.__shift"),
    }


class TestAsk:
    def test_streamed_answer_with_citation_links_and_highlighted_passage(
        self, driver: WebDriver, open_server: LiveServer
    ) -> None:
        _open(driver, open_server.url + "/")
        assert not driver.find_element(By.CSS_SELECTOR, "[data-signin]").is_displayed()  # open demo: no sign-in
        assert "Open demo" in driver.find_element(By.ID, "who").text
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)  # the keyboard's first stop: skip to content
        focused = driver.switch_to.active_element
        assert focused.text == "Skip to content" and focused.value_of_css_property("outline-style") == "solid"
        seen = _ask(driver, "Which environment variable points ragkb at a Chroma server?")
        assert isinstance(seen["streamed"], int) and seen["streamed"] > 1, "tokens arrive one by one"
        assert driver.execute_script("return PerformanceObserver.supportedEntryTypes.includes('layout-shift')")
        assert seen["shift"] < 0.05, f"the page moved while the answer streamed (layout shift {seen['shift']})"
        answer = driver.find_element(By.ID, "answer")
        assert "RAGKB_CHROMA_URL" in answer.text
        links = answer.find_elements(By.CSS_SELECTOR, "a.cite")
        assert links, "every [n] is a link"
        first = links[0]
        target = first.get_attribute("href").split("#")[1]
        first.click()
        card = driver.find_element(By.ID, target)
        assert driver.execute_script("return location.hash") == "#" + target
        wait_until(driver, lambda d: card.find_elements(By.TAG_NAME, "mark"), what="the highlighted sentence")
        marked = card.find_element(By.TAG_NAME, "mark").text
        assert "RAGKB_CHROMA_URL" in marked and marked in card.find_element(By.CSS_SELECTOR, ".passage").text
        assert card.find_element(By.CSS_SELECTOR, ".file").text.endswith(".md")
        assert console_errors(driver) == []
        screenshot(driver, "ask-citations")

        driver.find_element(By.ID, "thumb-up").click()
        driver.find_element(By.ID, "comment").send_keys("Found it <b>fast</b>")
        driver.find_element(By.ID, "feedback-send").click()
        wait_until(driver, lambda d: "recorded" in d.find_element(By.ID, "feedback-status").text, what="feedback")
        assert driver.find_element(By.ID, "thumb-up").get_attribute("aria-pressed") == "true"
        assert not driver.find_element(By.ID, "origin").is_displayed(), "a fresh answer has no label"
        _ask(driver, "Which environment variable points ragkb at a Chroma server?")
        assert driver.find_element(By.ID, "origin").text == "Cached answer"
        screenshot(driver, "ask-cached")

    def test_abstains_with_the_closest_passages(self, driver: WebDriver, open_server: LiveServer) -> None:
        _open(driver, open_server.url + "/")
        _ask(driver, "What is the airspeed velocity of an unladen swallow?")
        assert driver.find_element(By.ID, "abstained").is_displayed()
        assert "Not in the documents" in driver.find_element(By.ID, "abstained").text
        assert driver.find_elements(By.CSS_SELECTOR, "#sources .card"), "the closest passages are shown"
        assert driver.find_element(By.ID, "sources-heading").text == "Closest passages"
        screenshot(driver, "ask-abstained")

    def test_original_pdf_opens_at_the_cited_page(
        self, driver: WebDriver, open_server: LiveServer, files: dict[str, Path]
    ) -> None:
        _open(driver, open_server.url + "/")
        _ask(driver, "Which word processor was popular among legal professionals?")
        card = driver.find_element(By.CSS_SELECTOR, "#sources .card")
        assert "page 2" in card.find_element(By.CSS_SELECTOR, ".loc").text
        link = card.find_element(By.CSS_SELECTOR, "a.original")
        href = link.get_attribute("href")
        assert href.endswith("#page=2")
        wait_until(driver, lambda d: card.find_elements(By.TAG_NAME, "mark"), what="the highlighted sentence")
        in_view = driver.execute_script(
            """return [...document.querySelectorAll('#sources .passage')].filter((p) => p.querySelector('mark'))
                 .map((p) => { const m = p.querySelector('mark').getBoundingClientRect(), b = p.getBoundingClientRect();
                               return m.top >= b.top && m.top < b.bottom; });"""
        )
        assert in_view and all(in_view), "each quote is scrolled into view inside its passage box"
        screenshot(driver, "ask-pdf-citation")
        original = httpx.get(href.split("#")[0], timeout=10)
        assert original.status_code == 200, original.text  # needs GET /v1/documents/{id}/file (the blob store)
        assert original.headers["content-type"].startswith("application/pdf")
        assert hashlib.sha256(original.content).digest() == hashlib.sha256(files["multi_page"].read_bytes()).digest()
        before = set(driver.window_handles)
        link.click()
        wait_until(driver, lambda d: len(d.window_handles) > len(before), what="the original to open in a new tab")
        [tab] = set(driver.window_handles) - before
        driver.switch_to.window(tab)
        try:
            wait_until(driver, lambda d: d.current_url.endswith("#page=2"), what="the PDF at page 2")
            assert driver.execute_script("return document.contentType") == "application/pdf"
            time.sleep(1)  # let the viewer draw the page for the screenshot
            screenshot(driver, "original-pdf-open-demo")
        finally:
            driver.close()
            driver.switch_to.window(next(iter(before)))

    def test_with_a_key_the_original_is_fetched_with_it(
        self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]], files: dict[str, Path]
    ) -> None:
        """A link cannot carry the Bearer header: the page fetches the file and opens it from a blob URL."""
        live, tokens = keyed
        sign_in(driver, live.url, tokens["reader"])
        _open(driver, live.url + "/")
        Select(driver.find_element(By.ID, "collection")).select_by_value("demo")
        _ask(driver, "Which tools gained popularity for academic and technical writing?")
        card = driver.find_element(By.CSS_SELECTOR, "#sources .card")
        page = card.find_element(By.CSS_SELECTOR, ".loc").text.split("page ")[1].split(" ")[0]
        link = card.find_element(By.CSS_SELECTOR, "a.original")
        assert httpx.get(link.get_attribute("href").split("#")[0], timeout=10).status_code == 401  # no key, no file
        before = set(driver.window_handles)
        link.click()
        wait_until(driver, lambda d: len(d.window_handles) > len(before), what="the original to open in a new tab")
        [tab] = set(driver.window_handles) - before
        driver.switch_to.window(tab)
        try:
            url = wait_until(driver, lambda d: d.current_url if d.current_url.startswith("blob:") else None)
            assert url.endswith(f"#page={page}")
            assert driver.execute_script("return document.contentType") == "application/pdf"
            time.sleep(1)  # let the viewer draw the page for the screenshot
            screenshot(driver, "original-pdf-with-key")
        finally:
            driver.close()
            driver.switch_to.window(next(iter(before)))
        sign_in(driver, live.url, None)

    def test_html_in_questions_and_documents_renders_as_text(self, driver: WebDriver, open_server: LiveServer) -> None:
        _open(driver, open_server.url + "/")
        question = 'What is the launch code word? <b id="injected">bold</b><img src=x onerror="window.__pwned=3">'
        _ask(driver, question)
        result = driver.find_element(By.ID, "result")
        assert "<script>" in result.text, "the document's markup is shown as text"
        assert driver.find_elements(By.ID, "injected") == []
        assert driver.find_elements(By.CSS_SELECTOR, "#result script, #result img") == []
        assert driver.execute_script("return window.__pwned === undefined")
        screenshot(driver, "ask-markup-as-text")

    def test_readable_at_360_px(self, driver: WebDriver, open_server: LiveServer) -> None:
        driver.set_window_size(360, 800)
        try:
            _open(driver, open_server.url + "/")
            _ask(driver, "How are chunk size and overlap configured?")
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 360, f"the page scrolls sideways at 360 px ({width} px wide)"
            screenshot(driver, "ask-360px")
        finally:
            driver.set_window_size(1280, 900)


class TestDocuments:
    def test_upload_a_pdf_and_files_that_fail_with_their_reasons(
        self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]], files: dict[str, Path]
    ) -> None:
        live, tokens = keyed
        sign_in(driver, live.url, tokens["writer"])
        _open(driver, live.url + "/documents")
        assert driver.find_element(By.ID, "upload").is_displayed()
        collection = driver.find_element(By.ID, "upload-collection")
        collection.clear()
        collection.send_keys("uploads")
        chooser = driver.find_element(By.ID, "files")
        chooser.send_keys("\n".join(str(files[name]) for name in ("handbook", "broken", "unsupported", "big")))
        items = lambda d: d.find_elements(By.CSS_SELECTOR, "#uploads .upload-item")  # noqa: E731
        wait_until(
            driver,
            lambda d: len(items(d)) == 4 and all(i.get_attribute("data-state") in ("done", "failed") for i in items(d)),
            timeout=90,
            what="four uploads to finish",
        )
        outcome = {i.find_element(By.CSS_SELECTOR, ".name").text: i for i in items(driver)}
        assert outcome["amt_handbook_sample.pdf"].get_attribute("data-state") == "done"
        assert outcome["broken.pdf"].get_attribute("data-state") == "failed"
        assert "pdf" in outcome["broken.pdf"].find_element(By.CSS_SELECTOR, ".reason").text.lower()
        assert outcome["tool.exe"].get_attribute("data-state") == "failed"
        assert "unsupported file type: tool.exe" in outcome["tool.exe"].find_element(By.CSS_SELECTOR, ".reason").text
        assert outcome["big.txt"].get_attribute("data-state") == "failed"
        assert "Too large" in outcome["big.txt"].find_element(By.CSS_SELECTOR, ".reason").text
        table = wait_until(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "section.collection[data-collection='uploads'] tbody tr"),
            what="the new collection's table",
        )
        assert [row.find_element(By.CSS_SELECTOR, ".source").text for row in table] == [
            "upload://amt_handbook_sample.pdf"
        ]
        assert table[0].find_element(By.CSS_SELECTOR, ".pages").text == "1"
        screenshot(driver, "documents-upload")

    def test_delete_a_document_and_it_is_gone_from_answers(
        self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]]
    ) -> None:
        live, tokens = keyed
        sign_in(driver, live.url, tokens["admin"])
        question = "Which word processor was popular among legal professionals?"
        cited = httpx.post(
            live.url + "/v1/query",
            json={"question": question},
            headers={"Authorization": f"Bearer {tokens['admin']}"},
            timeout=60,
        ).json()
        assert any(c["source"] == "multi_page.pdf" for c in cited["citations"])
        _open(driver, live.url + "/documents")
        row = driver.find_element(By.XPATH, "//section[@data-collection='demo']//tr[td[text()='multi_page.pdf']]")
        title = row.find_element(By.CSS_SELECTOR, ".title").text
        row.find_element(By.CSS_SELECTOR, "button.delete").click()
        dialog = driver.find_element(By.ID, "confirm-delete")
        assert dialog.is_displayed() and title in dialog.text
        assert driver.switch_to.active_element == driver.find_element(By.ID, "confirm-cancel"), "safe default"
        screenshot(driver, "documents-confirm-delete")
        driver.find_element(By.ID, "confirm-ok").click()
        wait_until(
            driver,
            lambda d: not d.find_elements(By.XPATH, "//section[@data-collection='demo']//td[text()='multi_page.pdf']"),
            what="the deleted document to leave the table",
        )
        assert "Deleted" in driver.find_element(By.ID, "docs-status").text
        screenshot(driver, "documents-deleted")
        _open(driver, live.url + "/")
        _ask(driver, question)
        sources = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sources .file")]
        assert "multi_page.pdf" not in sources
        screenshot(driver, "ask-after-delete")


class TestReview:
    def test_an_answer_edited_and_approved_on_the_review_page_reaches_the_asker(
        self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]]
    ) -> None:
        live, tokens = keyed
        policy = httpx.put(
            live.url + "/v1/collections/held/review-policy",
            json={"review": "required"},
            headers={"Authorization": f"Bearer {tokens['admin']}"},
            timeout=10,
        )
        assert policy.status_code == 200, policy.text
        asker = driver.current_window_handle
        sign_in(driver, live.url, tokens["reader"])
        _open(driver, live.url + "/")
        Select(driver.find_element(By.ID, "collection")).select_by_value("held")
        box = driver.find_element(By.ID, "question")
        box.send_keys("How do I install ragkb?")
        box.send_keys(Keys.ENTER)
        wait_until(driver, lambda d: "Waiting for the review" in d.find_element(By.ID, "ask-status").text)
        screenshot(driver, "review-asker-waiting")

        driver.switch_to.new_window("tab")  # a new tab has its own session storage: the reviewer's key
        try:
            sign_in(driver, live.url, tokens["reviewer"])
            _open(driver, live.url + "/review")
            assert driver.find_element(By.CSS_SELECTOR, "[data-needs=review]").is_displayed()
            item = wait_until(
                driver,
                lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#queue button.open") if "install" in b.text],
                what="the held question in the queue",
            )[0]
            item.click()
            wait_until(driver, lambda d: d.find_element(By.ID, "review").is_displayed(), what="the review")
            assert driver.find_element(By.ID, "review-question").text == "How do I install ragkb?"
            candidate = driver.find_element(By.ID, "review-answer").get_attribute("value")
            assert candidate and driver.find_elements(By.CSS_SELECTOR, "#review-passages .card .passage")
            screenshot(driver, "review-page")
            first = MARKER.search(candidate)
            assert first is not None
            edited = candidate[: first.end()]  # the reviewer keeps only the first cited statement
            box = driver.find_element(By.ID, "review-answer")
            box.clear()
            box.send_keys(edited)
            driver.find_element(By.ID, "approve").click()
            wait_until(driver, lambda d: "Approved" in d.find_element(By.ID, "review-status").text)
        finally:
            driver.close()
            driver.switch_to.window(asker)
        wait_until(
            driver,
            lambda d: d.find_element(By.ID, "feedback").is_displayed(),
            timeout=30,
            what="the approved answer to reach the asker",
        )
        shown = " ".join(driver.find_element(By.ID, "answer").text.split())
        assert shown == " ".join(edited.split()), "the asker gets the answer as the reviewer edited it"
        assert len(driver.find_elements(By.CSS_SELECTOR, "#sources .card")) >= 1
        assert "approved" in driver.find_element(By.ID, "origin").text
        screenshot(driver, "review-asker-answered")

    def test_waiting_for_a_reviewer_stops_and_says_so(
        self, driver: WebDriver, service: QueryService, tmp_path: Path
    ) -> None:
        state = tmp_path / "state.sqlite3"
        settings = service.settings.model_copy(update={"web_wait_seconds": 3, "database_url": f"sqlite:///{state}"})
        app = create_app(settings, service)
        with LiveServer(app) as live:
            app.state.components.desk.set_policy("held", "required", by="test")
            _open(driver, live.url + "/")
            Select(driver.find_element(By.ID, "collection")).select_by_value("held")
            box = driver.find_element(By.ID, "question")
            box.send_keys("Which command installs ragkb?")
            box.send_keys(Keys.ENTER)
            wait_until(driver, lambda d: "Waiting for the review" in d.find_element(By.ID, "ask-status").text)
            status = wait_until(
                driver,
                lambda d: "Still waiting for a reviewer" in (t := d.find_element(By.ID, "ask-status").text) and t,
                timeout=20,
                what="the page to stop waiting",
            )
            assert "review " in status

    def test_reject_and_retry_then_reject(self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]]) -> None:
        live, tokens = keyed
        question = "Which Python version does ragkb need?"
        held = httpx.post(
            live.url + "/v1/query",
            json={"question": question, "collection": "held"},
            headers={"Authorization": f"Bearer {tokens['reader']}"},
            timeout=60,
        )
        assert held.status_code == 202, held.text  # the collection's policy is `required` (set above)
        review_id = held.json()["review_id"]
        sign_in(driver, live.url, tokens["reviewer"])
        _open(driver, live.url + "/review")

        def open_it() -> None:
            button = wait_until(
                driver,
                lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#queue button.open") if question in b.text],
                what="the question in the queue",
            )[0]
            button.click()
            wait_until(driver, lambda d: d.find_element(By.ID, "review-question").text == question)

        open_it()
        driver.find_element(By.ID, "review-note").send_keys("Quote the requirements section.")
        driver.find_element(By.ID, "retry").click()
        wait_until(driver, lambda d: "new answer will be tried" in d.find_element(By.ID, "review-status").text)
        detail = httpx.get(
            f"{live.url}/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {tokens['reviewer']}"}
        ).json()
        assert detail["status"] == "pending" and detail["attempts"] == 2
        open_it()
        driver.find_element(By.ID, "reject").click()
        wait_until(driver, lambda d: d.find_element(By.ID, "review-status").text == "Rejected.")
        wait_until(
            driver,
            lambda d: not [b for b in d.find_elements(By.CSS_SELECTOR, "#queue button.open") if question in b.text],
            what="the rejected question to leave the queue",
        )
        outcome = httpx.get(
            f"{live.url}/v1/answers/{review_id}", headers={"Authorization": f"Bearer {tokens['reader']}"}
        ).json()
        assert outcome["status"] == "rejected"
        screenshot(driver, "review-rejected")
        sign_in(driver, live.url, None)


class TestAccess:
    def test_read_only_key_sees_no_upload_and_the_api_refuses_it(
        self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]], files: dict[str, Path]
    ) -> None:
        live, tokens = keyed
        sign_in(driver, live.url, None)
        _open(driver, live.url + "/signin")
        box = driver.find_element(By.ID, "key")
        box.send_keys(tokens["reader"])
        box.send_keys(Keys.ENTER)
        wait_until(driver, lambda d: "Signed in as reader" in d.find_element(By.ID, "signin-status").text)
        assert driver.find_element(By.ID, "who").text == "Signed in as reader (read)"
        assert not driver.find_element(By.CSS_SELECTOR, "[data-needs=review]").is_displayed()
        _open(driver, live.url + "/documents")
        wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "section.collection"), what="the collections")
        assert not driver.find_element(By.ID, "upload").is_displayed()
        assert not [b for b in driver.find_elements(By.CSS_SELECTOR, "button.delete") if b.is_displayed()]
        screenshot(driver, "documents-read-only")
        _open(driver, live.url + "/review")
        assert "no review scope" in driver.find_element(By.ID, "review-status").text
        assert driver.find_elements(By.CSS_SELECTOR, "#queue li") == []
        with files["handbook"].open("rb") as handle:
            refused = httpx.post(
                live.url + "/v1/collections/demo/documents",
                files={"files": ("amt_handbook_sample.pdf", handle, "application/pdf")},
                headers={"Authorization": f"Bearer {tokens['reader']}"},
                timeout=30,
            )
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"

    def test_a_bad_key_is_refused_and_says_how_to_sign_in(
        self, driver: WebDriver, keyed: tuple[LiveServer, dict[str, str]]
    ) -> None:
        live, _ = keyed
        sign_in(driver, live.url, None)
        _open(driver, live.url + "/signin")
        box = driver.find_element(By.ID, "key")
        box.send_keys("rk_not-a-real-key")
        box.send_keys(Keys.ENTER)
        wait_until(driver, lambda d: "not valid" in d.find_element(By.ID, "signin-status").text)
        assert driver.execute_script("return sessionStorage.getItem('ragkb.key')") is None
        sign_in(driver, live.url, "rk_revoked-or-unknown")
        _open(driver, live.url + "/")
        banner = driver.find_element(By.ID, "banner")
        assert banner.is_displayed() and "Sign in" in banner.text
        assert banner.find_element(By.LINK_TEXT, "Sign in").get_attribute("href").endswith("/signin")
        screenshot(driver, "signin-bad-key")
        sign_in(driver, live.url, None)

    def test_server_down_is_said_plainly(self, driver: WebDriver, service: QueryService, tmp_path: Path) -> None:
        settings = service.settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'state.sqlite3'}"})
        with LiveServer(create_app(settings, service)) as live:
            sign_in(driver, live.url, None)
            _open(driver, live.url + "/")
        box = driver.find_element(By.ID, "question")
        box.send_keys("Is anyone there?")
        box.send_keys(Keys.ENTER)
        wait_until(driver, lambda d: "Cannot reach" in d.find_element(By.ID, "ask-status").text)
        assert driver.find_element(By.ID, "banner").is_displayed()
        screenshot(driver, "server-down")


@pytest.fixture(scope="class")
def threads(service: QueryService, files: dict[str, Path]) -> str:
    """A collection of its own (the Documents journey deletes multi_page.pdf from `demo`)."""
    reader = service.reader
    ingestor = Ingestor(reader.settings, store=reader.store, embedder=reader.embedder)
    report = ingestor.ingest_paths([files["multi_page"]], collection="threads")
    assert report.failed == 0, report.failures
    return "threads"


class TestConversation:
    def test_a_follow_up_in_the_thread_then_a_new_conversation(
        self, driver: WebDriver, open_server: LiveServer, threads: str
    ) -> None:
        """Ask, ask an elliptical follow-up: both turns stay in the page, the follow-up is searched as a standalone
        question and answered from the right page; the earlier turn's sources still work; the turns are the
        server's stored conversation; New conversation (by keyboard) starts afresh."""
        console_errors(driver)  # drain what earlier journeys left in the log
        _open(driver, open_server.url + "/")
        Select(driver.find_element(By.ID, "collection")).select_by_value(threads)
        assert not driver.find_element(By.ID, "new-conversation").is_enabled(), "nothing to leave yet"
        _ask(driver, "Which tools do screenwriters use?")
        assert "Final Draft" in driver.find_element(By.ID, "answer").text
        assert driver.find_element(By.ID, "question-label").text == "Follow-up question"
        _ask(driver, "And academics?")
        turns = wait_until(
            driver, lambda d: t if len(t := d.find_elements(By.CSS_SELECTOR, "#thread > li.turn")) == 2 else None
        )
        earlier, current = turns
        assert earlier.find_element(By.CSS_SELECTOR, ".question").text == "Which tools do screenwriters use?"
        assert "Final Draft" in earlier.find_element(By.CSS_SELECTOR, ".answer").text
        assert not earlier.find_element(By.CSS_SELECTOR, ".standalone").is_displayed(), "a first question stands alone"
        assert current.find_element(By.CSS_SELECTOR, ".question").text == "And academics?"
        standalone = current.find_element(By.CSS_SELECTOR, ".standalone")
        assert standalone.is_displayed()
        searched = current.find_element(By.CSS_SELECTOR, ".standalone-text").text
        assert "academics" in searched.lower() and searched != "And academics?"
        assert "LaTeX" in driver.find_element(By.ID, "answer").text
        cards = current.find_elements(By.CSS_SELECTOR, ".card")
        assert any(
            c.find_element(By.CSS_SELECTOR, ".file").text == "multi_page.pdf"
            and "page 3" in c.find_element(By.CSS_SELECTOR, ".loc").text
            for c in cards
        ), "the follow-up is answered from page 3 of multi_page.pdf"
        assert earlier.find_elements(By.CSS_SELECTOR, ".card"), "the earlier turn keeps its sources"
        screenshot(driver, "ask-conversation")

        # the earlier turn's [n] still leads to its own card, and its original still opens
        link = earlier.find_element(By.CSS_SELECTOR, "a.cite")
        target = link.get_attribute("href").split("#")[1]
        link.click()
        assert driver.execute_script("return location.hash") == "#" + target
        card = driver.find_element(By.ID, target)
        assert card.find_element(By.XPATH, "ancestor::li[contains(@class, 'turn')]") == earlier
        original = card.find_element(By.CSS_SELECTOR, "a.original").get_attribute("href").split("#")[0]
        assert httpx.get(original, timeout=10).status_code == 200

        # what the page shows is the server's stored conversation
        conversation = driver.find_element(By.ID, "thread").get_attribute("data-conversation")
        stored = httpx.get(f"{open_server.url}/v1/conversations/{conversation}", timeout=10).json()
        assert [m["question"] for m in stored["messages"]] == ["Which tools do screenwriters use?", "And academics?"]
        assert stored["messages"][1]["standalone_question"] == searched

        # keyboard: Tab from the question box reaches New conversation (after the collection and Ask)
        box = driver.find_element(By.ID, "question")
        box.click()
        for _ in range(3):
            driver.switch_to.active_element.send_keys(Keys.TAB)
        assert driver.switch_to.active_element.get_attribute("id") == "new-conversation"
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        wait_until(driver, lambda d: not d.find_element(By.ID, "result").is_displayed(), what="the thread to clear")
        assert driver.switch_to.active_element.get_attribute("id") == "question", "back to the question box"
        assert driver.find_element(By.ID, "question-label").text == "Question"
        assert driver.find_elements(By.CSS_SELECTOR, "#thread > li.turn.earlier") == []
        _ask(driver, "And academics?")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#thread > li.turn")) == 1
        assert not driver.find_element(By.CSS_SELECTOR, "#current-turn .standalone").is_displayed()
        assert "LaTeX" not in driver.find_element(By.ID, "answer").text, "alone, the follow-up lacks its subject"
        fresh = driver.find_element(By.ID, "thread").get_attribute("data-conversation")
        assert fresh and fresh != conversation, "a new stored conversation"
        assert console_errors(driver) == []
        screenshot(driver, "ask-new-conversation")
