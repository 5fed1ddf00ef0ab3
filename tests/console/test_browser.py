"""The console in a real browser (headless Chromium): a user's whole visit, the admin
pages, and the attacks, each page checked for accessibility and photographed at phone and
desktop widths."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.browser import (
    MISSING,
    check_page,
    chromium,
    download_into,
    downloaded,
    text,
    wait,
)
from tests.console.conftest import EVAL_POINTS, EVIL, TRAIN_POINTS, Console, expired_share_url
from tests.support.postgres import free_port
from tunevault.models import Scope
from tunevault.service.context import open_services

pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING)

from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("downloads")) as driver:
        yield driver


def _sign_in_by_keyboard(driver: WebDriver, url: str, token: str) -> None:
    """Tab from the top of the page to the key field, type, press Enter."""
    driver.delete_all_cookies()
    driver.get(f"{url}/console/")
    wait(driver, lambda d: d.current_url.startswith(f"{url}/console/sign-in"))
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("class") == "skip"
    for _ in range(5):
        if driver.switch_to.active_element.get_attribute("id") == "api_key":
            break
        driver.switch_to.active_element.send_keys(Keys.TAB)
    field = driver.switch_to.active_element
    assert field.get_attribute("id") == "api_key", "the key field is not reachable by Tab"
    field.send_keys(token, Keys.ENTER)
    wait(driver, lambda d: d.current_url == f"{url}/console/")


def _copy_a_command(browser: WebDriver, url: str) -> None:
    """Copy the curl command: the clipboard holds exactly the command shown."""
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    button = browser.find_element(By.CSS_SELECTOR, "button.copy[data-copy$='-3']")  # curl
    command = text(browser, f"#{button.get_attribute('data-copy')}")
    button.click()
    wait(browser, lambda _: button.find_element(By.XPATH, "following-sibling::span").text)
    pasted = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0](String(e)))"
    )
    assert pasted == command and command.startswith("curl -fL")


def _share_use_and_revoke(browser: WebDriver, console: Console, downloads: Path) -> None:
    """Make a link in the page, download it with no cookie, revoke it, find it refused."""
    before = {e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, ".share-url")}
    browser.find_element(By.CSS_SELECTOR, "form.share button").click()
    made = wait(
        browser,
        lambda d: [
            e
            for e in d.find_elements(By.CSS_SELECTOR, ".share-url")
            if e.get_attribute("id") not in before
        ],
    )
    row = f"//tr[.//code[@id='{made[0].get_attribute('id')}']]"
    share_url = made[0].text
    download_into(browser, downloads)
    browser.get(share_url)
    assert downloaded(browser, downloads, len(console.archive)) == console.seeded.archive.sha256
    assert httpx.get(share_url).content == console.archive  # no cookie, no key
    browser.get(f"{console.url}/console/fine-tunes/{console.ft}")
    browser.find_element(By.XPATH, row + "//button[contains(@class, 'danger')]").click()
    wait(browser, lambda d: "revoked" in d.find_element(By.XPATH, row).text)
    browser.get(share_url)
    assert "share_link_gone" in text(browser, "body")


def _sign_out_closes_the_doors(browser: WebDriver, console: Console) -> None:
    url = console.url
    browser.get(f"{url}/console/")
    cookie = browser.get_cookie("tv_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    browser.find_element(By.ID, "sign-out").click()
    wait(browser, lambda d: d.current_url.startswith(f"{url}/console/sign-in"))
    browser.get(f"{url}/console/fine-tunes/{console.ft}")
    assert browser.current_url.startswith(f"{url}/console/sign-in")
    # The old cookie, put back, opens nothing either.
    browser.add_cookie({"name": "tv_session", "value": cookie["value"], "path": "/console"})
    browser.get(f"{url}/console/fine-tunes/{console.ft}")
    assert browser.current_url.startswith(f"{url}/console/sign-in")


def test_a_users_visit(browser: WebDriver, console: Console, tmp_path: Path) -> None:
    browser.delete_all_cookies()
    browser.get(f"{console.url}/console/")
    check_page(browser, "sign-in")
    _sign_in_by_keyboard(browser, console.url, console.seeded.token)
    assert console.ft in text(browser, "#fine-tunes")
    check_page(browser, "fine-tunes")

    browser.find_element(By.LINK_TEXT, "acme/llama-ft").click()
    wait(browser, lambda d: d.current_url.endswith(console.ft))
    train = browser.find_elements(By.CSS_SELECTOR, "#loss-plot circle.point-train")
    evals = browser.find_elements(By.CSS_SELECTOR, "#loss-plot circle.point-eval")
    assert (len(train), len(evals)) == (TRAIN_POINTS, EVAL_POINTS)
    check_page(browser, "fine-tune")
    _copy_a_command(browser, console.url)

    # The download button: the file the browser saves is the archive, byte for byte.
    download_into(browser, tmp_path / "button")
    browser.find_element(By.CSS_SELECTOR, "a.download").click()
    sha = downloaded(browser, tmp_path / "button", len(console.archive))
    assert sha == console.seeded.archive.sha256

    _share_use_and_revoke(browser, console, tmp_path / "shared")
    _sign_out_closes_the_doors(browser, console)


def test_admin_pages(browser: WebDriver, console: Console) -> None:
    url = console.url
    _sign_in_by_keyboard(browser, url, console.admin_token)
    for name, path in (
        ("base-models", "/console/base-models"),
        ("storage", "/console/storage"),
        ("audit", "/console/admin/audit"),
        ("not-found", "/console/fine-tunes/ft-00000000-0000-0000-0000-000000000000"),
    ):
        browser.get(url + path)
        check_page(browser, name)
    browser.get(f"{url}/console/admin/keys")
    check_page(browser, "keys")
    browser.find_element(By.ID, "key-name").send_keys("browser-made")
    browser.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    token = wait(browser, lambda d: d.find_elements(By.ID, "new-token"))[0].text
    check_page(browser, "key-created")
    who = httpx.get(f"{url}/v3/whoami", headers={"Authorization": f"Bearer {token}"})
    assert who.status_code == 200 and who.json()["api_key"]["name"] == "browser-made"
    browser.get(f"{url}/console/admin/keys")
    assert token not in browser.page_source  # shown once


def test_injections_never_execute(browser: WebDriver, console: Console) -> None:
    _sign_in_by_keyboard(browser, console.url, console.seeded.token)
    for path in ("/console/", f"/console/fine-tunes/{console.evil_ft}"):
        browser.get(console.url + path)
        name = browser.find_element(
            By.XPATH, f"//main//*[contains(text(), {_xpath_literal(EVIL[:20])})]"
        )
        ActionChains(browser).move_to_element(name).perform()  # would fire onmouseover
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018
        injected = browser.execute_script(
            "return document.querySelectorAll('[onmouseover], [onerror], img').length"
            " + document.scripts.length - 1"  # ours: console.js
        )
        assert injected == 0
    assert text(browser, "#ft-name") == EVIL
    assert EVIL in text(browser, "#events")


def _xpath_literal(s: str) -> str:
    parts = s.split("'")
    return "concat('" + "', \"'\", '".join(parts) + "')" if len(parts) > 1 else f"'{s}'"


class _Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *_args: object) -> None:
        pass


def test_cross_site_post_is_refused(browser: WebDriver, console: Console) -> None:
    """Another port of the same host is the same site: the cookie goes along, SameSite
    does not help, the CSRF token and the Origin check must."""
    _sign_in_by_keyboard(browser, console.url, console.admin_token)
    _Attacker.page = (
        f'<form method="post" action="{console.url}/console/admin/keys">'
        '<input name="name" value="pwned"><input name="scope" value="admin">'
        '<button id="go">win a prize</button></form>'
    ).encode()
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        browser.find_element(By.ID, "go").click()
        wait(browser, lambda d: d.current_url.startswith(console.url))
        assert "cross-site form posts are refused" in text(browser, "body")
    finally:
        server.shutdown()
    browser.get(f"{console.url}/console/admin/keys")
    assert "pwned" not in text(browser, "#keys")


def test_closed_doors(browser: WebDriver, console: Console) -> None:
    """Another organization's fine-tune, a revoked key's session, altered and expired links."""
    with open_services(console.seeded.settings) as svc:
        org = svc.store.get_org_by_name("acme")
        assert org is not None
        key, token = svc.store.create_key(org.id, "short-lived", [Scope.READ])
    _sign_in_by_keyboard(browser, console.url, token)
    browser.get(f"{console.url}/console/fine-tunes/{console.other_ft}")
    assert text(browser, "h1") == "Not found" and "other/secret" not in browser.page_source
    with open_services(console.seeded.settings) as svc:
        svc.store.revoke_key(key.id)  # as `tunevault keys revoke` does
    browser.get(f"{console.url}/console/fine-tunes/{console.ft}")
    assert browser.current_url.startswith(f"{console.url}/console/sign-in")

    link = httpx.post(
        f"{console.url}/v1/shares",
        json={"ft_id": console.ft, "checkpoint": "model_output_path"},
        headers={"Authorization": f"Bearer {console.seeded.token}"},
    ).json()["url"]
    altered = link[:-1] + ("A" if link[-1] != "A" else "B")
    browser.get(altered)
    assert "share_link_not_found" in text(browser, "body")
    browser.get(expired_share_url(console))
    assert "share_link_gone" in text(browser, "body")
    assert hashlib.sha256(httpx.get(link).content).hexdigest() == console.seeded.archive.sha256
