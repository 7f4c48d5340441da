"""The dashboard's job form and jobs table as a newcomer sees them in a 1280-px window
(headless Chromium against `metacluster serve`): every registered method to pick, with
its options; K, a target ratio or a byte budget; a config hint the default method reads;
and a jobs table whose Download button is on screen."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._serve import serve_sqlite
from .test_dashboard import _browser_or_skip, _until

WIDTH = 1280
QUICK = {"soft_epochs": 1, "soft_min_steps": 0, "finetune_epochs": 1, "baselines": False}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, chromedriver = _browser_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDTH},900")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.save_screenshot(str(tmp_path / "dashboard-1280.png"))
        driver.quit()


def _model(path: Path) -> Path:
    import torch

    from metacluster.formats import save_model
    from metacluster.kan import build_kan

    torch.manual_seed(0)
    save_model(build_kan("bspline", [64, 8, 10]), path)
    return path


def _submit(
    browser: Any, model: Path, method: str, size: str | None, config: dict[str, Any]
) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    find = browser.find_element
    Select(find(By.ID, "method")).select_by_value(method)
    if size is not None:
        find(By.CSS_SELECTOR, f'input[name="size"][value="{size}"]').click()
    find(By.ID, "config").clear()
    find(By.ID, "config").send_keys(json.dumps(config))
    find(By.ID, "model-files").send_keys(str(model))
    before = find(By.ID, "message").text
    find(By.ID, "start").click()
    text = _until(
        lambda: (t := find(By.ID, "message").text) != before and t.startswith("job ") and t,
        60,
        "the job",
    )
    return str(text.split()[1])


def test_form_offers_methods_and_budgets_and_the_table_fits(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from metacluster.compress import MetaClusterConfig
    from metacluster.compress.pipeline.registry import get_method, method_names

    model = _model(tmp_path / "kan.safetensors")
    with serve_sqlite(tmp_path) as server:
        api = httpx.Client(
            base_url=server["METACLUSTER_URL"],
            headers={"Authorization": f"Bearer {server['METACLUSTER_API_KEY']}"},
        )
        find = browser.find_element
        browser.get(server["METACLUSTER_URL"] + "/")
        find(By.ID, "api-key").send_keys(server["METACLUSTER_API_KEY"])
        find(By.ID, "sign-in").click()
        _until(lambda: find(By.ID, "app").is_displayed(), 10, "the signed-in page")

        # Every registered method, the default chosen; the hint names knobs it reads.
        method = Select(find(By.ID, "method"))
        assert [o.get_attribute("value") for o in method.options] == method_names()
        default = MetaClusterConfig().method
        assert method.first_selected_option.get_attribute("value") == default
        hint = json.loads(find(By.ID, "config").get_attribute("placeholder"))
        assert "meta_epochs" not in hint and set(hint) <= {
            f.name for f in dataclasses.fields(MetaClusterConfig)
        }
        assert find(By.ID, "method-summary").text == get_method(default).summary

        # A method without K shows its options and no size; one with K offers budgets.
        method.select_by_value("pq")
        fields = find(By.ID, "method-options").find_elements(By.TAG_NAME, "input")
        assert {f.get_attribute("data-option"): f.get_attribute("value") for f in fields} == {
            "m": "3",
            "bits": "4",
        }
        assert not find(By.ID, "target-ratio").is_enabled()
        method.select_by_value(default)
        assert find(By.ID, "target-ratio").is_enabled() and find(By.ID, "max-bytes").is_enabled()

        # What the form sends: the chosen method and budget over the typed config.
        find(By.ID, "target-ratio").clear()
        find(By.ID, "target-ratio").send_keys("4")
        budget_job = _submit(browser, model, default, "target_ratio", QUICK)
        config = api.get(f"/v1/jobs/{budget_job}").json()["config"]
        assert (config["method"], config["target_ratio"], config["k"]) == (default, 4.0, 16)
        int8_job = _submit(browser, model, "int8", None, {"baselines": False})
        assert api.get(f"/v1/jobs/{int8_job}").json()["config"]["method"] == "int8"

        # Both finish; in 1280 px every row's Download button is on screen, no scrolling.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            jobs = [api.get(f"/v1/jobs/{j}").json()["status"] for j in (budget_job, int8_job)]
            if all(s in ("succeeded", "failed", "cancelled") for s in jobs):
                break
            time.sleep(0.5)
        assert jobs == ["succeeded", "succeeded"], jobs
        for job in (budget_job, int8_job):
            button = _until(
                lambda j=job: find(By.CSS_SELECTOR, f'tr[data-job-id="{j}"] button.download'),
                30,
                "the Download button",
            )
            right = browser.execute_script(
                "return arguments[0].getBoundingClientRect().right", button
            )
            assert 0 < right <= browser.execute_script("return window.innerWidth"), right
        wrap = browser.execute_script(
            "const w = document.querySelector('.table-wrap'); return [w.scrollWidth, w.clientWidth]"
        )
        assert wrap[0] <= wrap[1], wrap
