"""What the chapters need from a notebook environment, working in the book's build and on Colab.

:func:`glue` is myst-nb's ``glue`` when myst-nb is installed (the book's build, ``make``); elsewhere
(Colab, a bare Jupyter) myst-nb is absent and a glued number only matters to the website, so it is
displayed when asked for and otherwise dropped.
"""

from __future__ import annotations


def glue(name: str, variable, display: bool = True) -> None:
    """Store ``variable`` under ``name`` for ``{glue:text}`name``` in the book's prose."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(variable)
        return
    myst_glue(name, variable, display=display)
