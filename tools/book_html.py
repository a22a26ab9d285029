"""A Sphinx fix for the normbook website, loaded through _config.yml (sphinx.local_extensions).

Sphinx 7.4 adds an inline script (``app.add_js_file(None, body=...)``) registered after the builder
started twice: once with filename ``None`` and once, when writing starts, from the registry with
filename ``""``; the two do not compare equal. sphinx-thebe's ``const THEBE_JS_URL = ...`` is such a
script, so every page threw "Identifier 'THEBE_JS_URL' has already been declared" (the browser tests
in tests/site fail on console errors). Here each page keeps the first copy of every script.
"""

from __future__ import annotations


def _key(script) -> tuple:
    if isinstance(script, str):
        return (script,)
    return (script.filename or "", tuple(sorted(script.attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    """html-page-context: drop repeated <script> entries, keeping their first position."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    unique = []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    # in place: the list is the builder's, which Sphinx restores before the next page
    scripts[:] = unique


def setup(app):
    # late, after the extensions (myst-nb's widget scripts, ...) have added theirs to the page
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
