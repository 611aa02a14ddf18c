"""A real headless Chromium driven by Selenium, for the dashboard tests (tests/e2e/test_ui*.py).

`Browser.start(profile_dir)` runs Debian's `chromium` through Debian's `chromium-driver`
(`/usr/bin/chromedriver`, never a downloaded browser or driver) with a fresh user-data dir and
no background networking. Small helpers wait with deadlines for elements and text, type, click,
read the browser console, grant clipboard access through the DevTools protocol, sign in to the
dashboard, and save screenshots (into $AISIX_UI_SCREENSHOTS, for docs/ui/).
`BrowserUnavailable` is raised (with the install hint) when the binaries are missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = os.environ.get("AISIX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AISIX_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 10.0
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1360,900",
]


class BrowserUnavailable(RuntimeError):
    """chromium or chromedriver is not installed."""


class Browser:
    """One Chromium session; `close()` ends it."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    @classmethod
    def start(cls, profile_dir: Path) -> Browser:
        for path in (CHROMIUM, CHROMEDRIVER):
            if not (Path(path).is_file() or shutil.which(path)):
                raise BrowserUnavailable(
                    f"{path} not found: apt-get install chromium chromium-driver "
                    "(scripts/test.sh does this)"
                )
        os.environ.setdefault("SE_AVOID_STATS", "true")  # no Selenium Manager telemetry
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        profile_dir.mkdir(parents=True, exist_ok=True)
        options.add_argument(f"--user-data-dir={profile_dir}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(executable_path=CHROMEDRIVER)
        return cls(webdriver.Chrome(options=options, service=service))

    def close(self) -> None:
        self.driver.quit()

    # -- navigation and reading ------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def js_async(self, script: str, *args: Any) -> Any:
        """Run `script` with a `done` callback as its last argument; return what it passes."""
        return self.driver.execute_async_script(script, *args)

    def until(self, predicate: Callable[[], Any], message: str, timeout: float = WAIT_S) -> Any:
        """Poll `predicate` until it is truthy (page errors included in the failure)."""

        def attempt(_driver: Any) -> Any:
            try:
                return predicate()
            except (StaleElementReferenceException, WebDriverException):
                return None

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(attempt)
        except Exception as exc:
            raise AssertionError(
                f"timed out waiting for {message}; url {self.driver.current_url}; "
                f"console: {self.console()}"
            ) from exc

    def find(self, css: str, timeout: float = WAIT_S) -> WebElement:
        """The first visible element matching `css`, once there is one."""

        def visible() -> WebElement | None:
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed():
                    return element
            return None

        found: WebElement = self.until(visible, f"element {css!r}", timeout)
        return found

    def all(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def wait_text(self, css: str, wanted: str, timeout: float = WAIT_S) -> str:
        """The text of the first `css` element once it contains `wanted`."""

        def has() -> str | None:
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if wanted in element.text:
                    return str(element.text)
            return None

        found: str = self.until(has, f"{wanted!r} in {css!r}", timeout)
        return found

    def gone(self, css: str, timeout: float = WAIT_S) -> None:
        self.until(lambda: not self.driver.find_elements(By.CSS_SELECTOR, css), f"{css!r} gone")

    # -- input -----------------------------------------------------------------------------

    def click(self, css: str) -> None:
        element = self.find(css)
        self.until(element.is_enabled, f"{css!r} enabled")
        element.click()

    def click_text(self, css: str, label: str) -> None:
        """Click the first visible `css` element whose text is `label`."""

        def pick() -> WebElement | None:
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed() and element.text.strip() == label:
                    return element
            return None

        element: WebElement = self.until(pick, f"{css!r} labelled {label!r}")
        element.click()

    def fill(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        if text:
            element.send_keys(text)
        else:  # clear() fires no input event, so the page's state would keep the old text
            element.send_keys("x", Keys.BACKSPACE)

    def select(self, css: str, value: str) -> None:
        """Choose the option whose `value` property is `value` (Preact leaves the attribute
        out when it equals the option's text, so Select.select_by_value cannot be used)."""

        def option() -> WebElement | None:
            for candidate in Select(self.find(css)).options:
                if candidate.get_property("value") == value:
                    return candidate
            return None

        chosen: WebElement = self.until(option, f"option {value!r} in {css!r}")
        if not chosen.is_selected():
            chosen.click()

    def select_text(self, css: str, label: str) -> None:
        self.until(
            lambda: any(o.text == label for o in Select(self.find(css)).options),
            f"option {label!r} in {css!r}",
        )
        Select(self.find(css)).select_by_visible_text(label)

    def value(self, css: str) -> str:
        return str(self.find(css).get_attribute("value") or "")

    def nav(self, page: str) -> None:
        """Go to a dashboard page through its navigation link."""
        self.click(f'nav a[data-nav="{page}"]')
        self.find(f'main[data-page="{page}"]')

    # -- diagnostics -----------------------------------------------------------------------

    def console(self) -> list[str]:
        try:
            return [str(entry.get("message")) for entry in self.driver.get_log("browser")]
        except WebDriverException:
            return []

    def grant_clipboard(self, origin: str) -> None:
        self.driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )

    def allow_downloads(self, folder: Path) -> None:
        """Save downloads (e.g. the CSV export) into `folder` without asking."""
        folder.mkdir(parents=True, exist_ok=True)
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
        )

    def downloaded(self, folder: Path, suffix: str) -> Path:
        """The first completed download in `folder` whose name ends with `suffix`."""

        def done() -> Path | None:
            found = sorted(p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0)
            return found[0] if found else None

        path: Path = self.until(done, f"a download ending in {suffix!r} in {folder}")
        return path

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))

    def capture(self, name: str) -> None:
        """Save `<name>.png` into $AISIX_UI_SCREENSHOTS when set (scripts/ui_screenshots.sh)."""
        folder = os.environ.get("AISIX_UI_SCREENSHOTS")
        if folder:
            self.js("window.scrollTo(0, 0)")
            self.screenshot(Path(folder) / f"{name}.png")

    # -- the dashboard ---------------------------------------------------------------------

    def login(self, admin_url: str, admin_key: str) -> None:
        """Open the dashboard and sign in with `admin_key`; wait for the overview."""
        self.open(admin_url + "/ui/")
        self.fill("#admin-key", admin_key)
        self.click("#login-form button[type=submit]")
        self.find('main[data-page="overview"]')
