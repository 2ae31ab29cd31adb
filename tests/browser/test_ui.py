"""A real browser on the real UI: Debian's chromium, driven by Playwright, prices a home.

The UI runs as `streamlit run ui/app.py` (a subprocess on a free loopback port) against the
session's Serve app. Playwright never downloads a browser here: it drives /usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from rayestate.localstack import REPO, free_port, running
from tests.support.parts import missing
from ui.charts import money
from ui.listings import DEFAULT_LISTING

pytestmark = pytest.mark.timeout(900)
#: This machine has no network: keep Chromium from phoning home or updating itself.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]  # fmt: skip
SHARED_SCREENSHOT = Path("/tmp/rayestate-ui.png")


@pytest.fixture
def ui_url(serve_app_url, tmp_path):
    """`streamlit run ui/app.py` on a free loopback port, pointed at the Serve app."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "streamlit"), "run", str(REPO / "ui" / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RAYESTATE_API_URL": serve_app_url}
    with running(command, f"{url}/_stcore/health", tmp_path / "streamlit.log", env=env):
        yield url


def test_browser_prices_a_home_and_draws_the_waterfall(ui_url, serve_app_url, chromium_path, tmp_path):
    try:
        from playwright import sync_api
    except ImportError:  # part of the browser toolset, like chromium itself
        missing("browser", "the playwright package is not installed (pip install -e '.[dev]')")
    expected = httpx.post(f"{serve_app_url}/predict", json=DEFAULT_LISTING, timeout=60).json()["price"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.goto(ui_url)
            page.get_by_role("button", name="Price this home").click()

            price = page.get_by_test_id("stMetric").filter(has_text="Predicted price")
            sync_api.expect(price).to_contain_text(money(expected), timeout=90_000)
            waterfall = page.get_by_test_id("stVegaLiteChart").first
            sync_api.expect(waterfall).to_contain_text("Average home (base value)", timeout=60_000)
            sync_api.expect(waterfall).to_contain_text("Predicted price")
            bars = waterfall.locator("g.mark-rect path")
            assert bars.count() >= 3  # base, at least one feature, prediction
            sync_api.expect(page.get_by_role("heading", name="Why this price")).to_be_visible()
            page.wait_for_timeout(500)  # let the last chart finish its layout before the picture
            screenshot = tmp_path / "rayestate-ui.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    shutil.copyfile(screenshot, SHARED_SCREENSHOT)
