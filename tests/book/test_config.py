"""_config.yml keeps the promises the website makes (the browser tests check the built result).

Offline: MathJax and the widget manager come from _vendor/ (filled by tools/vendor.sh), never from a
CDN and never from _static/. Stored outputs: notebooks are not executed by the build. One repository
URL, which the launch buttons, the landing page and the Colab install cell all use.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
SPHINX = CONFIG["sphinx"]["config"]

pytestmark = pytest.mark.notebooks


def test_the_site_renders_stored_outputs():
    # quoted in the YAML: a bare `off` would be the boolean False
    assert CONFIG["execute"]["execute_notebooks"] == "off"


def test_javascript_is_served_by_the_site_itself():
    assert SPHINX["html_static_path"] == ["_vendor"]
    assert not (ROOT / "_static").exists(), "Jupyter Book adds every .js in _static/ to every page"
    scripts = [SPHINX["mathjax_path"], *SPHINX["nb_ipywidgets_js"]]
    assert not [s for s in scripts if "//" in s], scripts
    assert list(SPHINX["nb_ipywidgets_js"]) == [
        "require.js",
        "widgets-config.js",
        "widgets/embed-amd.js",
    ], "RequireJS, then its configuration, then the widget manager"
    vendor = (ROOT / "tools" / "vendor.sh").read_text()
    for name in ("mathjax/", "require.js", "widgets/", "widgets-config.js"):
        assert f'"$new/{name.rstrip("/")}' in vendor, f"tools/vendor.sh does not write {name}"


def test_one_repository_url_everywhere():
    url = CONFIG["repository"]["url"]
    assert url == "https://github.com/normbook/normbook"
    assert CONFIG["repository"]["path_to_book"] == "", "launch links must read book/NN_x.ipynb"
    assert CONFIG["parse"]["myst_substitutions"]["repo_url"] == url
    assert CONFIG["parse"]["myst_substitutions"]["branch"] == CONFIG["repository"]["branch"]
    text = (ROOT / "_config.yml").read_text()
    assert text.count("github.com/normbook") == 1, "the URL is written once (YAML anchors reuse it)"


def test_book_features_are_on():
    assert CONFIG["title"] and CONFIG["author"] and CONFIG["copyright"]
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    html = CONFIG["html"]
    assert html["use_repository_button"] and html["use_issues_button"]
    assert html["use_download_button"]
    assert "sphinx_exercise" in CONFIG["sphinx"]["extra_extensions"]
    assert CONFIG["bibtex_bibfiles"] == ["book/references.bib"]
    assert {"dollarmath", "amsmath", "colon_fence"} <= set(
        CONFIG["parse"]["myst_enable_extensions"]
    )
