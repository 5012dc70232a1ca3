"""A real headless Chromium (the OS package) driven by selenium, for the playground's browser tests.

``.ci/run`` installs ``chromium`` and ``chromium-driver`` with apt; locally install the same two
packages (a missing browser is a failure, not a skip). ``browser()`` starts one with a fresh profile
and the flags that keep it off the network; :func:`console_errors` drains the console's errors.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1360,1200")
SCREENSHOT_DIR_ENV = "ACESTEP_SCREENSHOT_DIR"  # where the tests write their screenshots (docs/images for the docs)


def find(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in extra:
        if Path(path).is_file():
            return path
    pytest.fail(f"none of {names} found: install them (`apt-get install -y chromium chromium-driver`)")


@contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find(BROWSERS)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="acestep-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(find(DRIVERS, ("/usr/lib/chromium/chromedriver",))))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """The console's errors since the last call (JS exceptions, console.error, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot_dir(default: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOT_DIR_ENV) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver, path: Path) -> None:
    """The top of the page (the form's head, the request and the history) as a PNG."""
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
