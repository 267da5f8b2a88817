"""The Gradio demo in a real browser: Debian's chromium driven by Playwright (headless, no
downloaded browser; ``make setup`` installs both). One app instance serves both tests, so the
second also shows that the app keeps working after an error.

DITACCEL_DEMO_SCREENSHOT=docs/demo.png keeps the first test's screenshot there (README shows it)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

gradio = pytest.importorskip("gradio", reason="pip install 'ditaccel[demo]' (make setup does)")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make setup does)")

CHROMIUM = Path("/usr/bin/chromium")
GENERATION_TIMEOUT_MS = 240_000  # a CPU generates dense and the method, 4 steps each, in a few seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from ditaccel.demo import build_app

    app = build_app(device="cpu")
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.is_file(), f"{CHROMIUM} not found: `make setup` installs Debian's chromium package"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.goto(app_url)
    page.wait_for_selector("#generate")
    return page


def _pick(page, element_id: str, option: str) -> None:
    page.locator(f"#{element_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _fill(page, selector: str, value: str) -> None:
    box = page.locator(selector)
    box.fill(value)
    box.blur()  # not Tab: that would focus (and open) the next dropdown


def _generate(page) -> str:
    """Click generate and wait for this run's status line ("Run N: done." or "Run N: error: ...")."""
    previous = re.search(r"Run (\d+):", page.locator("#status").inner_text())
    run = int(previous.group(1)) + 1 if previous else 1
    page.locator("#generate").click()
    page.wait_for_function(f"() => {{ const s = document.querySelector('#status'); return s && s.innerText.includes('Run {run}:'); }}",
                           timeout=GENERATION_TIMEOUT_MS)
    return page.locator("#status").inner_text()


def _video_duration(page, element_id: str) -> float:
    selector = f"#{element_id} video"
    page.wait_for_selector(selector, timeout=30_000)
    page.wait_for_function(f"() => {{ const v = document.querySelector('{selector}'); return v && v.duration > 0; }}",
                           timeout=30_000)
    return page.evaluate(f"() => document.querySelector('{selector}').duration")


def test_generate_compare_with_dense_in_the_browser(page, tmp_path):
    _fill(page, "#prompt textarea", "a red circle moving right")
    _pick(page, "method", "radial")
    _fill(page, "#steps input", "4")
    _fill(page, "#frames input", "8")
    compare = page.locator("#compare input[type=checkbox]")
    if not compare.is_checked():
        compare.check()
    status = _generate(page)
    assert "done." in status, status
    readout = page.locator("#readout").inner_text()
    assert "speed-up" in readout and "PSNR" in readout and "SSIM" in readout, readout
    assert float(readout.split("PSNR")[1].split("dB")[0]) > 10  # a number, and a sane one
    assert _video_duration(page, "method_video") > 0
    assert _video_duration(page, "dense_video") > 0
    assert page.locator("#block_map img").count() == 1
    assert "blocks of" in page.locator("#block_caption").inner_text()
    assert "blocks.1.attn1" in page.locator("#summary").inner_text()
    shot = Path(os.environ.get("DITACCEL_DEMO_SCREENSHOT") or tmp_path / "demo.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_bad_parameter_shows_an_error_and_the_app_keeps_working(page):
    _pick(page, "method", "neighborhood")
    _fill(page, "#parameters textarea", "window=(99, 99, 99)")
    _fill(page, "#steps input", "3")
    _fill(page, "#frames input", "8")
    status = _generate(page)
    assert "error" in status and "window" in status and "grid" in status, status
    assert "Traceback" not in page.content()
    # The same app instance, a valid generation: it works, and the failed one left nothing patched.
    _fill(page, "#parameters textarea", "")
    _pick(page, "method", "piecewise")
    assert "done." in _generate(page)
    assert "piecewise" in page.locator("#readout").inner_text()
    assert _video_duration(page, "method_video") > 0
    assert "approximated" in page.locator("#block_caption").inner_text()
