"""A real browser for the web page's tests: Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver (installed by `make browser`; nothing is downloaded at run time), and the real app
served by uvicorn on a free loopback port in a thread of the test process (sharing its loaded model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import uvicorn
from fastapi import FastAPI
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from .servers import free_port

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
REPORTS = Path(__file__).resolve().parents[1] / "reports" / "ui"
T = TypeVar("T")


class LiveServer:
    """`app` under uvicorn on 127.0.0.1:<free port> for the life of a `with` block."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start on {self.url}")
            time.sleep(0.05)
        httpx.get(f"{self.url}/healthz", timeout=5).raise_for_status()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def chrome(width: int = 1280, height: int = 900) -> WebDriver:
    """Headless Chromium at the given window size."""
    if not CHROMEDRIVER.exists():
        raise RuntimeError(f"{CHROMEDRIVER} is missing: run `make browser` (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 30, what: str = "") -> T:
    """`condition`'s first truthy value; on timeout, the failure names what was awaited and the page's text.

    An element the page re-rendered while the condition read it (stale) counts as "not yet", like a missing one.
    """
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(condition)
    except TimeoutException:
        body = driver.execute_script("return document.body ? document.body.innerText : ''")
        raise AssertionError(f"timed out waiting for {what or condition}; the page says:\n{body}") from None


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save what the page shows under reports/ui/<name>.png (whole page height), for a person to look at."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"{name}.png"
    size = driver.get_window_size()
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(size["width"], max(size["height"], min(height + 140, 4000)))
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser console's errors since the last call (a CSP violation or a script error shows up here)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def sign_in(driver: WebDriver, base_url: str, token: str | None) -> None:
    """Put a key in this tab's session storage (None: sign out), as the Sign-in page does."""
    if not driver.current_url.startswith(base_url):
        driver.get(f"{base_url}/signin")
    if token is None:
        driver.execute_script("sessionStorage.removeItem('ragkb.key')")
    else:
        driver.execute_script("sessionStorage.setItem('ragkb.key', arguments[0])", token)


def ready(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return document.body && document.body.dataset.ready === 'true'"))
