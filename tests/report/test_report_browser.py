"""The HTML report in a real browser: headless Chromium loads the page from a file, finds
one table row per claim, every image decodes, and the console stays clean.

Outside CI a missing browser skips the test; in CI (CI=true) it fails."""

import os
import shutil

import pytest

from dltheory.claims import all_claims
from dltheory.claims.runner import run_claim
from dltheory.engine import Store
from dltheory.report import build_report


def _driver():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = "headless Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def test_report_renders_a_row_per_claim_and_every_image_decodes(tmp_path):
    with Store.open(tmp_path / "r.sqlite") as store:
        run_claim(all_claims()["implicit-bias-gd-l2"], store, profile="smoke")
        page = build_report(store, tmp_path / "report")
    driver = _driver()
    try:
        driver.get(page.as_uri())
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#verdicts tbody tr'))"
            ".map(tr => tr.cells[0].innerText)")
        assert sorted(rows) == sorted(all_claims())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert images, "the claim that ran must have a figure"
        assert all(done and width > 0 and alt for done, width, alt in images), images
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        driver.quit()


def test_text_from_the_store_is_escaped(tmp_path, monkeypatch):
    claim = all_claims()["implicit-bias-gd-l2"]
    with Store.open(tmp_path / "r.sqlite") as store:
        run_claim(claim, store, profile="smoke")
        monkeypatch.setattr(type(claim), "statement", "<script>alert(1)</script> & more")
        page = build_report(store, tmp_path / "report")
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
