"""The inspection page in a real browser: headless Chromium driven by Selenium.

Served by rnnlab serve, the page generates, reads, shades units, ranks them and plots
training; the file rnnlab inspect --html writes works from disk the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_serve import one_torch_thread, start_server, tiny_run

from rnnlab.report import write_report

# The autouse fixture, imported so that it applies to this module's tests too.
__all__ = ["one_torch_thread"]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})",
)
WAIT = 30  # seconds; a busy 2-core machine is slow, a working page is far quicker


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--user-data-dir={profile}", "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver named outright: selenium-manager never looks for (or downloads) one.
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(run, driver):
    """The served page, loaded and done with its first reading."""
    address, _ = start_server(run)
    driver.get(f"http://{address}/")
    wait_for(driver, "#tokens", "ready")
    return driver


def wait_for(driver, selector: str, state: str):
    """Wait until the element's data-state is ``state`` (the page sets it as it works)."""
    WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element(By.CSS_SELECTOR, selector).get_attribute("data-state") == state
    )


def no_console_errors(driver):
    """Nothing went wrong in the page: no script error, no refused resource."""
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def top5_after_hovering(driver, index: int) -> list[tuple[str, float]]:
    """Hover over token ``index`` of #tokens: the (token, probability) rows #top5 shows."""
    token = driver.find_elements(By.CSS_SELECTOR, "#tokens span.token")[index]
    ActionChains(driver).move_to_element(token).perform()
    WebDriverWait(driver, WAIT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#top5 li")) == 5
    )
    rows = driver.find_elements(By.CSS_SELECTOR, "#top5 li")
    return [
        (
            row.find_element(By.TAG_NAME, "code").text,
            float(row.find_element(By.CLASS_NAME, "p").text),
        )
        for row in rows
    ]


@pytest.mark.slow
def test_generated_text_streams_in_after_the_prefix(page):
    prefix = page.find_element(By.ID, "prefix")
    prefix.clear()
    prefix.send_keys("the time ")
    length = page.find_element(By.ID, "length")
    length.clear()
    length.send_keys("40")
    page.find_element(By.ID, "generate-button").click()
    wait_for(page, "#generated", "done")
    text = page.find_element(By.ID, "generated").get_attribute("textContent")
    # 40 tokens: a character each, or 5 for an <unk>
    assert text.startswith("the time ") and 40 <= len(text) - len("the time ") <= 200
    no_console_errors(page)


def test_reading_shades_tokens_and_hovering_shows_the_top_5(page, tmp_path):
    page.find_element(By.ID, "read-button").click()
    wait_for(page, "#tokens", "ready")
    tokens = page.find_elements(By.CSS_SELECTOR, "#tokens span.token")
    assert len(tokens) > 100
    assert "background-color" in tokens[5].get_attribute("style")
    loss = page.find_element(By.ID, "loss").text
    assert "nats" in loss and "bits per token" in loss
    rows = top5_after_hovering(page, 5)
    assert len(rows) == 5 and all(0 <= p <= 1 for _, p in rows)
    assert [p for _, p in rows] == sorted((p for _, p in rows), reverse=True)
    page.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").read_bytes().startswith(b"\x89PNG")
    no_console_errors(page)


def unit_styles(driver, unit: int) -> list[str]:
    """The style of the first tokens of #unit-tokens, shaded by unit ``unit`` of layer 1's h."""
    Select(driver.find_element(By.ID, "layer")).select_by_value("1")
    Select(driver.find_element(By.ID, "kind")).select_by_value("h")
    field = driver.find_element(By.ID, "unit")
    field.clear()
    field.send_keys(str(unit))
    driver.find_element(By.ID, "show-unit-button").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: (
            d.find_element(By.ID, "unit-tokens").get_attribute("data-unit") == f"1h{unit}"
            and d.find_element(By.ID, "unit-tokens").get_attribute("data-state") == "ready"
        )
    )
    spans = driver.find_elements(By.CSS_SELECTOR, "#unit-tokens span.token")[:40]
    return [span.get_attribute("style") for span in spans]


def test_picking_another_unit_changes_the_shading(page):
    first, second = unit_styles(page, 0), unit_styles(page, 1)
    assert all("background-color" in style for style in first)
    assert first != second
    no_console_errors(page)


def test_ranking_units_for_line_position_lists_them_and_a_click_shows_one(page):
    Select(page.find_element(By.ID, "feature")).select_by_value("line-position")
    page.find_element(By.ID, "rank-button").click()
    wait_for(page, "#ranking", "ready")
    ranked = page.find_elements(By.CSS_SELECTOR, "#ranking li button")
    assert len(ranked) == 10 and "r = " in ranked[0].text
    ranked[0].click()
    words = ranked[0].text.split()  # "layer 1 c unit 5 r = +0.123"
    WebDriverWait(page, WAIT).until(
        lambda d: (
            d.find_element(By.ID, "unit-tokens").get_attribute("data-unit")
            == f"{words[1]}{words[2]}{words[4]}"
        )
    )
    no_console_errors(page)


def test_training_shows_the_curve_and_the_configuration(page):
    WebDriverWait(page, WAIT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#curve polyline")) == 2
    )
    assert len(page.find_elements(By.CSS_SELECTOR, "#curve circle")) == 4  # 2 epochs, 2 curves
    config = page.find_element(By.ID, "config").text
    assert "model.cell lstm" in config and "model.hidden 16" in config


def test_the_report_works_from_a_file(run, driver, tmp_path):
    report = write_report(run, tmp_path / "report.html")
    driver.get(report.as_uri())
    wait_for(driver, "#tokens", "ready")
    rows = top5_after_hovering(driver, 3)
    assert len(rows) == 5 and all(0 <= p <= 1 for _, p in rows)
    assert not driver.find_element(By.ID, "generate-section").is_displayed()
    wait_for(driver, "#unit-tokens", "ready")
    no_console_errors(driver)
