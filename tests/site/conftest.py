"""The built website (_build/html) served on 127.0.0.1 and visited with Debian's chromium.

`make browser` builds the site, runs tools/ensure_chromium.sh, then these tests. Without a built
site or without chromium they skip with one line saying why, except in CI (CI=true): there they run.

Environment: NORMBOOK_SITE (default _build/html) tests another build; NORMBOOK_CHROMIUM (default
/usr/bin/chromium) another Debian-style chromium binary. Screenshots go to <site>/../screenshots.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import re
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = pathlib.Path(os.environ.get("NORMBOOK_SITE", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = SITE.parent / "screenshots"
CHROMIUM = pathlib.Path(os.environ.get("NORMBOOK_CHROMIUM", "/usr/bin/chromium"))
IN_CI = os.environ.get("CI", "").lower() == "true"
# Headless, and nothing that phones home: the only traffic is to the test server.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def unavailable(reason: str):
    """Skip with `reason`, or fail in CI, where the site tests must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the site tests must run)", pytrace=False)
    pytest.skip(reason)


def built_pages() -> list[str]:
    """Every HTML page of the built site, relative to its root (e.g. 'book/01_problem.html')."""
    if not SITE.is_dir():
        return []
    skip = {"_static", "_sources", "_images"}
    return sorted(
        p.relative_to(SITE).as_posix()
        for p in SITE.rglob("*.html")
        if not skip.intersection(p.relative_to(SITE).parts) and not is_redirect(p)
    )


def is_redirect(path: pathlib.Path) -> bool:
    """index.html only sends the browser on to the landing page (tested on its own)."""
    return 'http-equiv="Refresh"' in path.read_text(encoding="utf-8")[:500]


@functools.cache
def page_html(page: str) -> str:
    return (SITE / page).read_text(encoding="utf-8")


def pages_with(pattern: str) -> list[str]:
    """Built pages whose HTML matches `pattern` (decided at collection time, from the files)."""
    return [p for p in built_pages() if re.search(pattern, page_html(p))]


def params(pages: list[str]) -> list:
    """Pytest parameters: the pages, or one placeholder so the test reports why it cannot run."""
    return pages or [pytest.param(None, id="no-page")]


@pytest.fixture(scope="session")
def site() -> pathlib.Path:
    if not (SITE / "index.html").is_file():
        unavailable(f"no built site at {SITE}: run `make site` first")
    return SITE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the tests report failed requests themselves
        pass


@pytest.fixture(scope="session")
def base_url(site) -> str:
    """The site served by a threading http.server on a free port of 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        unavailable(
            f"no chromium at {CHROMIUM}: run `bash tools/ensure_chromium.sh` (as root it installs "
            "Debian's chromium with apt-get)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (it is in requirements.txt: run `make setup`)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# --- visiting a page ------------------------------------------------------------------------------

# Text outside code and typeset math that still holds TeX delimiters (MathJax left it raw).
_RAW_MATH_JS = r"""() => {
  const skip = "pre, code, script, style, textarea, mjx-container, .highlight";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest(skip)) continue;
    const m = n.textContent.match(/\\\(|\\\[|\$\$/);
    if (m) raw.push(n.textContent.trim().slice(0, 80));
  }
  return {
    nodes: document.querySelectorAll("span.math, div.math").length,
    typeset: document.querySelectorAll("mjx-container").length,
    errors: [...document.querySelectorAll("mjx-merror")].map(
      (e) => e.getAttribute("data-mjx-error") || e.textContent),
    raw: raw,
  };
}"""

# Every widget view of the page has been replaced by a drawn widget (html-manager's libembed puts a
# div.widget-subarea before each view script and renders the widget, .widget-* elements, into it).
_WIDGETS_JS = """() => {
  const sel = 'script[type="application/vnd.jupyter.widget-view+json"]';
  const views = [...document.querySelectorAll(sel)];
  const drawn = views.filter((v) => {
    const area = v.previousElementSibling;
    return area && area.classList.contains("widget-subarea")
      && area.querySelector("[class*='widget-']");
  });
  return {views: views.length, drawn: drawn.length,
          kinds: [...new Set([...document.querySelectorAll(".widget-subarea [class*='widget-']")]
            .flatMap((e) => [...e.classList].filter((c) => c.startsWith("widget-"))))].sort()};
}"""

# Images that did not load: wait (at most 15 s) for each, then naturalWidth == 0 means broken.
_IMAGES_JS = """async () => {
  const imgs = [...document.images];
  imgs.forEach((i) => { i.loading = "eager"; });
  const done = Promise.all(imgs.map((i) => i.complete ? null : new Promise((r) => {
    i.addEventListener("load", r); i.addEventListener("error", r); })));
  await Promise.race([done, new Promise((r) => setTimeout(r, 15000))]);
  return {count: imgs.length,
          broken: imgs.filter((i) => !i.complete || i.naturalWidth === 0)
                      .map((i) => (i.currentSrc || i.src).slice(0, 120))};
}"""

# Move every slider of every static explorer (normlib.explorer) through its values: the frame
# (img src) must change, the label must follow, and moving back must restore the first frame.
_EXPLORERS_JS = """() => [...document.querySelectorAll("div.nbx-explorer")].map((root) => {
  const img = root.querySelector("img.nbx-frame");
  const sliders = [...root.querySelectorAll("input[type=range]")].map((el) => {
    const start = el.value, before = img.getAttribute("src");
    const labels = JSON.parse(el.dataset.labels);
    let changed = false, label_ok = true;
    for (let v = 0; v <= Number(el.max); v++) {
      if (String(v) === start) continue;
      el.value = String(v);
      el.dispatchEvent(new Event("input", {bubbles: true}));
      changed = changed || img.getAttribute("src") !== before;
      label_ok = label_ok && el.parentNode.querySelector("output").textContent === labels[v];
    }
    el.value = start;
    el.dispatchEvent(new Event("input", {bubbles: true}));
    return {param: el.dataset.param, values: labels.length, changed, label_ok,
            restored: img.getAttribute("src") === before};
  });
  return {id: root.id, sliders};
})"""


class Visit:
    """What one page load showed: problems (failed or foreign requests, console and page errors),
    math, widgets, images and explorers, as plain data for the tests to assert on."""

    def __init__(self, browser, base_url: str, page: str):
        self.url = base_url + page
        self.problems: list[str] = []
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, service_workers="block"
        )
        context.route("**/*", self._route)
        tab = context.new_page()
        tab.on(
            "console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}")
        )
        tab.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        tab.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} ({r.failure})"))
        tab.on(
            "response",
            lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"),
        )
        self._base = base_url
        try:
            tab.goto(self.url, wait_until="load", timeout=60_000)
            html = page_html(page)
            self.math = self._math(tab) if 'class="math' in html else None
            self.widgets = self._widgets(tab) if "widget-state+json" in html else None
            tab.wait_for_load_state("networkidle", timeout=30_000)
            self.images = tab.evaluate(_IMAGES_JS)
            self.explorers = tab.evaluate(_EXPLORERS_JS)
        finally:
            context.close()

    def _route(self, route):
        url = route.request.url
        if url.startswith(self._base) or url.startswith("data:"):
            route.continue_()
        else:
            self.problems.append(f"request to another host: {url}")
            route.abort()

    @staticmethod
    def _math(tab) -> dict:
        started = None
        try:
            tab.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000
            )
            tab.evaluate("() => MathJax.startup.promise.then(() => true)")
        except Exception as err:  # the counts below show nothing typeset; say why
            started = f"MathJax did not start or finish: {err}"
        math = tab.evaluate(_RAW_MATH_JS)
        if started:
            math["errors"].insert(0, started)
        return math

    @staticmethod
    def _widgets(tab) -> dict:
        try:
            tab.wait_for_function(
                f"() => {{ const s = ({_WIDGETS_JS})(); "
                "return s.views > 0 && s.drawn === s.views; }",
                timeout=30_000,
            )
        except Exception:  # the counts below say how many were not drawn
            pass
        return tab.evaluate(_WIDGETS_JS)


@pytest.fixture(scope="session")
def visit(browser, base_url):
    """visit(page) -> Visit, each page loaded once per session."""
    cache: dict[str, Visit] = {}

    def _visit(page: str) -> Visit:
        if page is None:
            pytest.skip(f"no built page of this kind in {SITE}")
        if page not in cache:
            cache[page] = Visit(browser, base_url, page)
        return cache[page]

    return _visit


# --- which pages each test runs on (decided from the built files at collection time) -------------


def notebook_pages() -> list[str]:
    """Pages built from a notebook (Sphinx keeps each page's source under _sources/)."""
    return [p for p in built_pages() if (SITE / "_sources" / p).with_suffix(".ipynb").is_file()]


PAGE_KINDS = {
    "page": built_pages,
    "math_page": lambda: pages_with(r'class="math'),
    "widget_page": lambda: pages_with(r"application/vnd\.jupyter\.widget-state\+json"),
    "explorer_page": lambda: pages_with(r'class="nbx-explorer"'),
    "notebook_page": notebook_pages,
}


def pytest_generate_tests(metafunc):
    for name, select in PAGE_KINDS.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, params(select()))


@pytest.fixture(scope="session")
def pages_by_kind(site) -> dict[str, list[str]]:
    """{"page": all pages, "math_page": [...], ...}: the selections above, for tests that choose."""
    return {name: select() for name, select in PAGE_KINDS.items()}
