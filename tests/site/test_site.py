"""The built website, page by page, in Debian's chromium (fixtures in conftest.py).

Every page loads with no failed request, no request to another host and no console error; math is
typeset; images load; widget snapshots are drawn; static explorers respond to their sliders; launch
buttons open this repository's notebooks; search finds chapters. Screenshots of three pages go to
_build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import html.parser
import pathlib
import re
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CHAPTER = re.compile(r"book/\d\d_\w+\.html$")  # a chapter page (book/NN_stem.html)


def _page_source(site: pathlib.Path, page: str) -> str:
    return (site / page).read_text(encoding="utf-8")


def test_page_loads_cleanly(visit, page):
    problems = visit(page).problems
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def test_images_load(visit, page):
    images = visit(page).images
    assert not images["broken"], f"{page}: images that did not load: {images['broken']}"


def test_math_is_typeset(visit, math_page):
    math = visit(math_page).math
    assert math["typeset"] >= math["nodes"] > 0, f"{math_page}: {math}"
    assert not math["errors"], f"{math_page}: MathJax errors {math['errors']}"
    assert not math["raw"], f"{math_page}: TeX left raw in the text: {math['raw']}"


def test_widget_snapshots_are_drawn(visit, widget_page):
    widgets = visit(widget_page).widgets
    assert widgets["views"] > 0, f"{widget_page} stores widget state but shows no widget"
    assert widgets["drawn"] == widgets["views"], f"{widget_page}: widgets not drawn: {widgets}"
    assert "widget-slider" in " ".join(widgets["kinds"]), f"{widget_page}: {widgets['kinds']}"


def test_explorers_respond(visit, explorer_page):
    explorers = visit(explorer_page).explorers
    assert explorers, (
        f"{explorer_page}: the explorer HTML is there but nothing was found in the page"
    )
    for explorer in explorers:
        for s in explorer["sliders"]:
            where = f"{explorer_page}, explorer {explorer['id']}, slider {s['param']!r}"
            assert s["changed"], f"{where}: moving it never changes the figure"
            assert s["label_ok"], f"{where}: the value label does not follow the slider"
            assert s["restored"], f"{where}: moving it back does not bring the first figure back"


def test_index_sends_readers_to_the_landing_page(browser, base_url):
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(base_url + "index.html")
        tab.wait_for_url(re.compile(re.escape(TOC["root"]) + r"\.html$"), timeout=30_000)
    finally:
        context.close()


def test_search_finds_a_chapter_for_momentum(browser, base_url):
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(base_url + "search.html?q=momentum")
        tab.wait_for_function(
            "() => (document.querySelector('#search-results .search-summary') || {}).textContent",
            timeout=60_000,
        )
        hits = tab.eval_on_selector_all(
            "#search-results ul.search li a", "els => els.map(e => e.getAttribute('href'))"
        )
    finally:
        context.close()
    assert any(CHAPTER.search(h.split("?")[0].split("#")[0]) for h in hits), hits


class _Tags(html.parser.HTMLParser):
    """(tag, attribute, value) of every attribute that makes the browser fetch something."""

    FETCHING = {
        "script": ("src",),
        "link": ("href",),
        "img": ("src", "srcset"),
        "iframe": ("src",),
        "source": ("src", "srcset"),
        "video": ("src", "poster"),
        "audio": ("src",),
        "embed": ("src",),
        "object": ("data",),
    }

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in self.FETCHING.get(tag, ()) and value:
                self.found.append((tag, name, value))


def test_page_fetches_nothing_from_another_host(site, page):
    """The offline promise, read from the HTML: no script, stylesheet or image from elsewhere."""
    parser = _Tags()
    parser.feed(_page_source(site, page))
    foreign = [t for t in parser.found if re.match(r"\s*(https?:)?//", t[2])]
    assert not foreign, f"{page} loads from other hosts: {foreign}"


def test_launch_buttons_open_this_repository(site, notebook_page):
    """Colab and Binder buttons open book/NN_x.ipynb of the repository named in _config.yml."""
    repo = CONFIG["repository"]
    owner_name = urllib.parse.urlparse(repo["url"]).path.strip("/")
    branch = repo["branch"]
    notebook = pathlib.PurePosixPath(notebook_page).with_suffix(".ipynb").as_posix()
    assert (ROOT / notebook).is_file(), f"{notebook_page}: {notebook} is not in the repository"
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    binder = CONFIG["launch_buttons"]["binderhub_url"].rstrip("/")
    expected = {
        "Colab": f"{colab}/github/{owner_name}/blob/{branch}/{notebook}",
        "Binder": f"{binder}/v2/gh/{owner_name}/{branch}?urlpath=lab/tree/{notebook}",
    }
    hrefs = re.findall(r'href="([^"]+)"', _page_source(site, notebook_page))
    for name, url in expected.items():
        assert url in hrefs, f"{notebook_page}: no {name} button to {url}"


def test_colab_links_open_notebooks_of_this_repository(site, page):
    """Any link to Colab (launch buttons, the landing page's) opens a notebook that exists here."""
    repo = CONFIG["repository"]
    owner_name = urllib.parse.urlparse(repo["url"]).path.strip("/")
    colab = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    prefix = f"{colab}/github/{owner_name}/blob/{repo['branch']}/"
    links = [h for h in re.findall(r'href="([^"]+)"', _page_source(site, page)) if colab in h]
    wrong = [h for h in links if not h.startswith(prefix)]
    assert not wrong, f"{page}: Colab links to another repository or branch: {wrong}"
    missing = [h for h in links if not (ROOT / h[len(prefix) :]).is_file()]
    assert not missing, (
        f"{page}: Colab links to notebooks that are not in the repository: {missing}"
    )


def _screenshot_pages(pages: dict[str, list[str]]) -> dict[str, str]:
    """The landing page, the first chapter with a widget snapshot and an explorer (else the first
    chapter), and the search results for "momentum"."""
    chapters = [p for p in pages["page"] if CHAPTER.search(p)]
    rich = [p for p in chapters if p in pages["widget_page"] and p in pages["explorer_page"]]
    landing = TOC["root"] + ".html"
    return {
        "landing": landing,
        "chapter": (rich or chapters or [landing])[0],
        "search": "search.html?q=momentum",
    }


def test_screenshots(browser, base_url, site, pages_by_kind):
    """Full-page screenshots of three pages in _build/screenshots/, for review by a person."""
    out = site.parent / "screenshots"
    out.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        for name, page in _screenshot_pages(pages_by_kind).items():
            tab.goto(base_url + page, wait_until="networkidle")
            tab.wait_for_timeout(1500)  # MathJax and the widget manager draw after `load`
            path = out / f"{name}.png"
            tab.screenshot(path=str(path), full_page=True)
            assert path.stat().st_size > 10_000, f"{path} looks empty"
    finally:
        context.close()
