"""The rendered book in a real browser: Debian's Chromium, driven by Selenium through Debian's
chromedriver (nothing downloads a browser). Runs against `_build/html`, served on 127.0.0.1,
after `python3 dev.py book`; skips with the reason when the book is not built or Chromium,
chromedriver or selenium is absent, unless UALM_BROWSER_TEST=require (CI), where it fails.

Per page: loads with no console error beyond ALLOWED; no Markdown table left as raw `| … |`
text; no display equation wider than its box or starting left of it; every <img> loaded and
non-empty; a screenshot under `_build/screenshots/`. Book-wide: the table of contents links
resolve, each chapter's Colab button opens its own notebook, and an explorer on the static
page changes its image when a slider moves.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from test_book import CHAPTERS, PAGES, ROOT

HTML = Path(os.environ.get("UALM_BOOK_HTML") or ROOT / "_build" / "html")  # the built book
SHOTS = HTML.parent / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REQUIRED = os.environ.get("UALM_BROWSER_TEST") == "require"
WIDTH = 1280  # a laptop window: the book's column is then at its usual width

# Console messages that are not the book's fault, each with the reason.
ALLOWED = [
    # Chromium's own, when its background networking is off and the machine is offline.
    re.compile(r"favicon\.ico"),
]


def _missing() -> str | None:
    if not (HTML / "index.html").exists():
        return "the book is not built (run `python3 dev.py book`)"
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not Path(path).exists():
            return f"{what} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


if (reason := _missing()) is not None:
    if REQUIRED:
        pytest.fail(f"browser test required but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--window-size={WIDTH},900",
                "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def page_url(server: str, doc: str) -> str:
    return urljoin(server, f"{doc}.html")


def load(browser, url: str) -> list[dict]:
    """Open `url`, wait for MathJax and the images; return the console messages."""
    browser.get_log("browser")  # drop what an earlier page left
    browser.get(url)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const imgs = Array.from(document.images).map(i => i.complete ? null :
            new Promise(r => { i.onload = i.onerror = r; })).filter(Boolean);
        const mj = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
        Promise.all([mj, ...imgs]).then(() => setTimeout(done, 300), () => done());
    """)
    return browser.get_log("browser")


@pytest.fixture(scope="module")
def pages(server, browser):
    """Every page loaded once: doc -> {console, raw_tables, wide_math, bad_images, ...}."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = {}
    for doc in PAGES:
        logs = load(browser, page_url(server, doc))
        info = browser.execute_script(r"""
            const main = document.querySelector('article.bd-article') || document.querySelector('main')
                         || document.body;
            const text = main.innerText;
            const raw = text.split('\n').filter(l => /^\s*\|.*\|\s*$/.test(l) && /\|\s*:?-{3,}/.test(l));
            // An equation may be wider than the column only inside a box that scrolls
            // sideways, and never start left of that box (it could not be scrolled to).
            const wide = [];
            const column = main.getBoundingClientRect();
            const scroller = e => { for (let a = e.parentElement; a && a !== main; a = a.parentElement)
                                        if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return a;
                                    return null; };
            for (const c of main.querySelectorAll('mjx-container')) {
                const box = c.getBoundingClientRect();
                const s = scroller(c);
                const frame = s ? s.getBoundingClientRect() : column;
                if (box.left < frame.left - 1 || (!s && box.right > column.right + 1) ||
                    (s && frame.right > column.right + 1))
                    wide.push(c.textContent.slice(0, 60));
            }
            const badImg = Array.from(document.images)
                .filter(i => i.offsetParent !== null && (!i.complete || i.naturalWidth === 0))
                .map(i => i.src.slice(0, 80));
            const mathSource = (text.match(/\\\(|\\\[|\$\$/g) || []).length;
            // MathJax shows TeX it cannot typeset as a yellow error box (mjx-merror)
            const mathErrors = Array.from(main.querySelectorAll('mjx-merror'))
                .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
            // a cell's stderr (warnings, tracebacks) is rendered in an output of its own
            const stderr = Array.from(main.querySelectorAll('.output.stderr, .stderr'))
                .map(e => e.textContent.trim().slice(0, 120)).filter(Boolean);
            // numbers as a reader writes them: no e-notation, no raw NaN (code and its printout aside)
            const prose = main.cloneNode(true);
            prose.querySelectorAll('pre, code, .highlight, mjx-container').forEach(e => e.remove());
            const machine = [...(prose.textContent.match(/\b\d+(\.\d+)?e[-+]\d+\b/g) || []),
                             ...Array.from(prose.querySelectorAll('td')).map(td => td.textContent.trim())
                                  .filter(t => /^[-+]?nan$/i.test(t))].slice(0, 5);
            return {raw_tables: raw, wide_math: wide, bad_images: badImg, machine_numbers: machine,
                    math_nodes: document.querySelectorAll('mjx-container').length,
                    unrendered_math: mathSource,
                    math_errors: mathErrors, stderr: stderr,
                    height: document.documentElement.scrollHeight};
        """)
        info["console"] = [m for m in logs if m.get("level") == "SEVERE"
                           and not any(a.search(m.get("message", "")) for a in ALLOWED)]
        # The whole page at the window's width (Chromium caps a capture at 16,384 px).
        browser.set_window_size(WIDTH, min(info["height"] + 150, 16000))
        browser.save_screenshot(str(SHOTS / f"{Path(doc).name}.png"))
        browser.set_window_size(WIDTH, 900)
        out[doc] = info
    return out


@pytest.mark.parametrize("doc", PAGES)
def test_page_console_is_clean(pages, doc):
    assert not pages[doc]["console"], pages[doc]["console"]


@pytest.mark.parametrize("doc", PAGES)
def test_page_has_no_raw_tables(pages, doc):
    assert not pages[doc]["raw_tables"], pages[doc]["raw_tables"][:3]


@pytest.mark.parametrize("doc", PAGES)
def test_page_math_fits(pages, doc):
    assert not pages[doc]["wide_math"], pages[doc]["wide_math"]
    assert pages[doc]["unrendered_math"] == 0, "TeX left unrendered (MathJax did not run?)"


@pytest.mark.parametrize("doc", PAGES)
def test_page_has_no_math_errors(pages, doc):
    assert not pages[doc]["math_errors"], pages[doc]["math_errors"]


@pytest.mark.parametrize("doc", PAGES)
def test_page_shows_no_stderr(pages, doc):
    """Warnings and tracebacks belong in the test log, not on a reader's page."""
    assert not pages[doc]["stderr"], pages[doc]["stderr"]


@pytest.mark.parametrize("doc", PAGES)
def test_page_numbers_are_for_people(pages, doc):
    """Tables and prose write 6.5 × 10⁻³, not 6.45e-03, and "—" for a missing value, not nan."""
    assert not pages[doc]["machine_numbers"], pages[doc]["machine_numbers"]


@pytest.mark.parametrize("doc", PAGES)
def test_page_images_load(pages, doc):
    assert not pages[doc]["bad_images"], pages[doc]["bad_images"]


def test_toc_links_resolve(server, browser):
    browser.get(urljoin(server, "index.html"))
    hrefs = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav a[href]")}
    local = [h for h in hrefs if h and h.startswith(server)]
    assert len(local) >= len(PAGES) - 1, local
    missing = [h for h in local if not (HTML / urlparse(h).path.lstrip("/")).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("doc", CHAPTERS)
def test_colab_button_opens_the_chapter_notebook(server, browser, doc):
    browser.get(page_url(server, doc))
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='colab']")]
    assert links, f"{doc}: no Colab launch button"
    target = urlparse(links[0]).path
    assert target.endswith(f"/{doc}.ipynb"), target
    assert (ROOT / f"{doc}.ipynb").is_file()


def test_static_explorer_responds_to_a_slider(server, browser):
    load(browser, page_url(server, "book/01_image_formation"))
    explorers = browser.find_elements(By.CSS_SELECTOR, ".ualm-static-explorer")
    assert explorers, "no static explorer on chapter 1"
    root = explorers[0]

    def shown():
        return [i.get_attribute("data-state") for i in root.find_elements(By.CSS_SELECTOR, "img[data-state]")
                if i.is_displayed()]

    before = shown()
    assert len(before) == 1, before
    slider = root.find_element(By.CSS_SELECTOR, "input[type=range]")
    browser.execute_script("""
        const s = arguments[0];
        s.value = (+s.value + 1) % (+s.max + 1);
        s.dispatchEvent(new Event('input', {bubbles: true}));
    """, slider)
    after = shown()
    assert len(after) == 1 and after != before, (before, after)


@pytest.mark.parametrize("width", [400, WIDTH])
def test_sidebar_toggles_work(server, browser, width):
    """The visible hamburger opens the table of contents on a phone (in a dialog) and collapses
    the sidebar on a laptop; the phone's "Contents" button opens the page's contents. Both themes
    bind only the first toggle of the page, a hidden one (_static/ualm.js forwards the clicks)."""
    try:
        browser.set_window_size(width, 900)
        browser.get(page_url(server, "book/01_image_formation"))
        sidebar = browser.find_element(By.CSS_SELECTOR, "#pst-primary-sidebar")
        toggle = [b for b in browser.find_elements(By.CSS_SELECTOR, ".primary-toggle") if b.is_displayed()]
        assert len(toggle) == 1, "expected one visible sidebar toggle"
        toggle[0].click()
        if width < 992:  # the theme's breakpoint
            assert browser.execute_script("return document.querySelector('#pst-primary-sidebar-modal').open")
            links = browser.find_elements(By.CSS_SELECTOR, "#pst-primary-sidebar-modal a[href]")
            assert sum(a.is_displayed() for a in links) >= len(CHAPTERS), "the table of contents is not shown"
            browser.execute_script("document.querySelector('#pst-primary-sidebar-modal').close()")
            contents = [b for b in browser.find_elements(By.CSS_SELECTOR, ".secondary-toggle") if b.is_displayed()]
            assert contents, "no visible page-contents button"
            contents[0].click()
            assert browser.execute_script("return document.querySelector('#pst-secondary-sidebar-modal').open")
        else:
            # the theme animates the sidebar: wait for the end of the change, not the first frame
            wait = WebDriverWait(browser, 10)
            assert wait.until(lambda _: "pst-sidebar-hidden" in sidebar.get_attribute("class")
                              and not sidebar.is_displayed())
            toggle[0].click()
            assert wait.until(lambda _: sidebar.is_displayed())
        searches = [e for e in browser.find_elements(By.CSS_SELECTOR, ".search-button-field, .search-button")
                    if e.is_displayed()]
        assert len(searches) <= 1, "a second search box is shown"
    finally:
        browser.set_window_size(WIDTH, 900)


@pytest.mark.parametrize("doc", ["book/05_diffusion", "book/06_calibration", "book/results"])
def test_phone_keeps_figures_and_equations_readable(server, browser, doc):
    """At 400 px a figure is not squeezed below 80 % of its size (its labels would fall under
    8 px): it scrolls sideways in its output box; and every display equation can be scrolled to
    (the number of a numbered one included)."""
    try:
        browser.set_window_size(400, 900)
        load(browser, page_url(server, doc))
        info = browser.execute_script(r"""
            const main = document.querySelector('article.bd-article') || document.body;
            const squeezed = Array.from(main.querySelectorAll('div.cell_output img'))
                // shown ones only: an explorer hides all its frames but one
                .filter(i => i.naturalWidth > 0 && i.getBoundingClientRect().width > 0
                             && i.getBoundingClientRect().width < 0.8 * i.naturalWidth)
                .map(i => `${Math.round(i.getBoundingClientRect().width)} of ${i.naturalWidth} px`);
            const column = main.getBoundingClientRect();
            const lost = Array.from(main.querySelectorAll('mjx-container[display="true"]')).filter(c => {
                const box = c.getBoundingClientRect();
                let s = c; while (s && s !== main && !['auto', 'scroll'].includes(getComputedStyle(s).overflowX))
                    s = s.parentElement;
                return box.left < column.left - 1 || (box.right > column.right + 1 && (!s || s === main));
            }).map(c => c.textContent.slice(0, 40));
            return {squeezed: squeezed.slice(0, 5), lost: lost.slice(0, 5),
                    figures: main.querySelectorAll('div.cell_output img').length};
        """)
        assert info["figures"], "no figures on the page: did it load?"
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(400, min(height + 150, 16000))
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / f"phone-{Path(doc).name}.png"))  # the page as a phone shows it
        assert not info["squeezed"], f"figures squeezed at 400 px: {info['squeezed']}"
        assert not info["lost"], f"equations out of reach at 400 px: {info['lost']}"
    finally:
        browser.set_window_size(WIDTH, 900)
