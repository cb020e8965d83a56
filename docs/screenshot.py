"""Make the README's picture of `rnnlab serve`: a run's page with the unit that best tracks a
feature of the text, found by the page's own ranking, in headless Debian Chromium.

    rnnlab train --recipe shakespeare-quick --out runs/shakespeare
    python docs/screenshot.py runs/shakespeare --feature line-position --out docs/serve.png

It starts `rnnlab serve RUN --port 0`, opens the page, ranks the units for the feature,
shows the first one, and saves a screenshot of the page, then stops the server. Prints
the ranking it clicked.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT = 120  # seconds: a 512-unit model reads its default text a token at a time


def started_server(run: str) -> tuple[subprocess.Popen, str]:
    """`rnnlab serve RUN --port 0` and the URL it prints."""
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "serve", run, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    for line in server.stdout:
        found = re.search(r"http://\S+", line)
        if found:
            return server, found.group(0).rstrip("/") + "/"
    raise SystemExit("rnnlab serve printed no address")


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                     "--window-size=1280,1250"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--feature", default="line-position")
    parser.add_argument("--out", default="docs/serve.png")
    args = parser.parse_args()
    server, url = started_server(args.run)
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = browser(profile)
            try:
                driver.get(url)
                ready = lambda selector: (
                    lambda d: (  # noqa: E731
                        d.find_element(By.CSS_SELECTOR, selector).get_attribute("data-state")
                        == "ready"
                    )
                )
                WebDriverWait(driver, WAIT).until(ready("#tokens"))
                Select(driver.find_element(By.ID, "feature")).select_by_value(args.feature)
                driver.find_element(By.ID, "rank-button").click()
                WebDriverWait(driver, WAIT).until(ready("#ranking"))
                ranked = driver.find_elements(By.CSS_SELECTOR, "#ranking li button")
                print("\n".join(button.text for button in ranked))
                ranked[0].click()
                WebDriverWait(driver, WAIT).until(ready("#unit-tokens"))
                driver.execute_script(  # the hidden-unit section at the top of the picture
                    "document.getElementById('unit-tokens').closest('section').scrollIntoView()"
                )
                time.sleep(1)  # let the shading paint
                driver.save_screenshot(args.out)
                print(f"wrote {args.out}")
            finally:
                driver.quit()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
