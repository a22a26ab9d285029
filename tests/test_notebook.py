"""normlib.notebook.glue: myst-nb's glue in the book's build, a harmless stand-in elsewhere."""

import builtins
import sys

from normlib.notebook import glue


def test_glue_without_myst_nb_displays_or_drops(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_myst(name, *args, **kwargs):
        if name.startswith("myst_nb"):
            raise ImportError("no myst_nb here (as on Colab)")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "myst_nb", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_myst)
    glue("hidden", 1.5, display=False)
    assert capsys.readouterr().out == ""
    glue("shown", 2.5)
    assert "2.5" in capsys.readouterr().out


def test_glue_with_myst_nb_stores_the_value(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: shown.append((a, k)))
    glue("stored", 3.25, display=False)
    ((args, kwargs),) = shown
    assert kwargs.get("metadata", {}).get("scrapbook", {}).get("name") == "stored"
