"""Headless Chromium driven by Selenium for the console's browser tests: Debian's
`chromium` and `chromium-driver` (scripts/test installs them), nothing downloaded at run
time. Screenshots go to test-output/console/ (or $TUNEVAULT_TEST_OUTPUT/console)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (scripts/bootstrap --test)"
)
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = (
    "Debian's chromium and chromium-driver are not installed (scripts/test installs them as root)"
    if not (CHROMIUM and CHROMEDRIVER)
    else ""
)
WIDTHS = {"phone": 390, "desktop": 1280}
A11Y = (Path(__file__).parent / "a11y.js").read_text()
OUTPUT = Path(os.environ.get("TUNEVAULT_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))


@contextmanager
def chromium(downloads: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDTHS['desktop']},900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        download_into(driver, downloads)
        yield driver
    finally:
        driver.quit()


def download_into(driver: WebDriver, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )


def wait(driver: WebDriver, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    """Poll until the condition holds (never a fixed sleep); an element that went stale
    because the page was replaced meanwhile is looked for again."""

    def polled(d: Any) -> Any:
        try:
            return condition(d)
        except WebDriverException as e:
            # chromedriver's other word for stale: a node of the document just replaced.
            if "does not belong to the document" in (e.msg or ""):
                return False
            raise

    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.05,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(polled)


def downloaded(driver: WebDriver, folder: Path, size: int) -> str:
    """The sha256 of the one finished download in folder, once it has all its bytes."""

    def done(_: Any) -> Path | None:
        files = [p for p in folder.iterdir() if not p.name.endswith(".crdownload")]
        return files[0] if len(files) == 1 and files[0].stat().st_size == size else None

    path: Path = wait(driver, done)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def check_page(driver: WebDriver, name: str) -> None:
    """At phone and desktop widths: no accessibility problem, and a whole-page screenshot."""
    out = OUTPUT / "console"
    out.mkdir(parents=True, exist_ok=True)
    for label, width in WIDTHS.items():
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": label == "phone"},
        )
        problems = driver.execute_script(A11Y)
        assert problems == [], f"{name} at {label} width: {problems}"
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        (out / f"{name}-{label}.png").write_bytes(base64.b64decode(shot["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
