"""The dashboard (`GET /`) end to end in headless Chromium (Debian's `chromium` and
`chromedriver`, driven by Selenium) against the real stack: sign in with an API key,
upload a model and a dataset, start a job, watch its status and progress change live
(the page is never reloaded), open the report, download the artifact, sign out.

CI installs the browser (`.ci/run`); elsewhere the test is skipped, saying why, when no
browser is present.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Stack
from .test_redis_postgres import QUICK

pytestmark = pytest.mark.integration

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
CHROMEDRIVER = shutil.which("chromedriver")


def _browser_or_skip() -> tuple[str, str]:
    if CHROMIUM and CHROMEDRIVER:
        return CHROMIUM, CHROMEDRIVER
    why = "no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the dashboard test, but there is {why}")
    pytest.skip(why)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, chromedriver = _browser_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        with_logs = tmp_path / "dashboard.png"
        driver.save_screenshot(str(with_logs))  # kept in pytest's tmp dir for a failure
        driver.quit()


def _until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # an element not there yet
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_sign_in_upload_start_watch_report_download(
    stack: Stack, inputs: dict[str, Path], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    stack.ensure_one_worker()
    find = browser.find_element
    browser.get(str(stack.client.base_url) + "/")
    assert browser.title == "MetaCluster"

    # A wrong key is refused; the right one opens the app.
    find(By.ID, "api-key").send_keys("mck_not_a_key")
    find(By.ID, "sign-in").click()
    _until(lambda: "sign-in failed: 401" in find(By.ID, "signin").text, 10, "the refusal")
    find(By.ID, "api-key").clear()
    find(By.ID, "api-key").send_keys(stack.key["key"])
    find(By.ID, "sign-in").click()
    _until(lambda: find(By.ID, "app").is_displayed(), 10, "the signed-in page")
    assert (
        browser.execute_script("return sessionStorage.getItem('metacluster.apiKey')")
        == (stack.key["key"])
    )
    assert browser.execute_script("return localStorage.length + document.cookie.length") == 0
    browser.execute_script("window.__notReloaded = true")

    # Upload a model and a dataset, start a job.
    find(By.ID, "model-files").send_keys(str(inputs["model"]))
    find(By.ID, "dataset-file").send_keys(str(inputs["data"]))
    find(By.ID, "k").clear()
    find(By.ID, "k").send_keys("4")
    config = {k: v for k, v in QUICK.items() if k != "k"} | {"meta_epochs": 8}
    find(By.ID, "config").send_keys(json.dumps(config))
    find(By.ID, "start").click()
    message = _until(
        lambda: (t := find(By.ID, "message").text).startswith("job ") and t, 60, "the job"
    )
    job_id = message.split()[1]
    row = f'tr[data-job-id="{job_id}"]'

    # Watch it: statuses and progress change in place, from the event stream.
    statuses: list[str] = []
    progress: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = browser.execute_script(
            "const r = document.querySelector(arguments[0]); return r && r.dataset.status", row
        )
        pct = browser.execute_script(
            "const r = document.querySelector(arguments[0]);"
            "return r && r.querySelector('.pct') && r.querySelector('.pct').textContent",
            row,
        )
        if status and (not statuses or statuses[-1] != status):
            statuses.append(status)
        if pct and (not progress or progress[-1] != pct):
            progress.append(pct)
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert statuses[-1] == "succeeded", (statuses, stack.api.log_tail())
    assert "running" in statuses, statuses
    values = [int(p.strip().rstrip("%")) for p in progress]
    assert values == sorted(values) and any(0 < v < 100 for v in values), progress
    assert browser.execute_script("return window.__notReloaded === true")
    ratio = _until(lambda: find(By.CSS_SELECTOR, f"{row} .ratio").text, 20, "the metrics")
    assert ratio.endswith("×")

    # Open the report: the job's self-contained page, in a sandboxed frame.
    _until(lambda: find(By.CSS_SELECTOR, f"{row} button.report"), 20, "the report button").click()
    _until(lambda: find(By.ID, "report").is_displayed(), 20, "the report")
    browser.switch_to.frame(find(By.ID, "report-frame"))
    assert job_id in _until(lambda: browser.find_element(By.TAG_NAME, "h1").text, 20, "its title")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 4
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 100 for i in images)
    browser.switch_to.default_content()
    browser.save_screenshot(str(browser.downloads.parent / "report.png"))

    # Download the artifact: the bytes the API has, checked by their sha256.
    find(By.CSS_SELECTOR, f"{row} button.download").click()
    target = browser.downloads / "model.mcz"
    _until(lambda: target.is_file() and not list(browser.downloads.glob("*.crdownload")), 30,
           "the download")  # fmt: skip
    job = stack.client.get(f"/v1/jobs/{job_id}").json()
    sha = next(a["sha256"] for a in job["artifacts"] if a["name"] == "model.mcz")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha

    # Sign out: the key is gone from the tab.
    find(By.ID, "sign-out").click()
    _until(lambda: find(By.ID, "signin").is_displayed(), 10, "the sign-in form")
    assert browser.execute_script("return sessionStorage.length") == 0


def test_dashboard_is_served_with_a_strict_content_security_policy(stack: Stack) -> None:
    import httpx

    r = httpx.get(str(stack.client.base_url) + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert '<script src="/dashboard/app.js"' in r.text and stack.key["key"] not in r.text
    js = httpx.get(str(stack.client.base_url) + "/dashboard/app.js")
    assert js.status_code == 200 and "sessionStorage" in js.text
    assert "/" not in httpx.get(str(stack.client.base_url) + "/openapi.json").json()["paths"]
