"""Explorers: one drawing function, two front ends.

- :meth:`Explorer.live`: ipywidgets sliders that redraw with a kernel (Colab, Jupyter).
- :meth:`Explorer.static`: every slider position drawn in advance and switched by a few lines of
  JavaScript, so the explorer still responds on the static website, with no kernel.

    ex = Explorer(draw, name="bn-noise", batch_size=[2, 4, 8, 16], momentum=[0.01, 0.1, 0.5])
    ex.live()     # in Jupyter / Colab
    ex.static()   # on the website (and anywhere HTML with JavaScript renders)

``draw(**values)`` must return a matplotlib Figure.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import re


class Explorer:
    """An interactive figure over a grid of parameter values (see the module docstring)."""

    def __init__(self, draw, *, name: str, **params):
        if not params:
            raise ValueError("an explorer needs at least one parameter, e.g. batch_size=[2, 4, 8]")
        for key, values in params.items():
            if len(values) < 2:
                raise ValueError(f"parameter {key!r} needs at least 2 values, got {list(values)}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            raise ValueError(f"name must be lowercase letters, digits and '-', got {name!r}")
        self.draw = draw
        self.name = name
        self.params = {k: list(v) for k, v in params.items()}

    def defaults(self) -> dict:
        """The value each slider starts at: the middle of its list."""
        return {k: v[(len(v) - 1) // 2] for k, v in self.params.items()}

    def live(self):
        """An ``ipywidgets.interactive`` with one selection slider per parameter."""
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        def show(**values):
            self.draw(**values)
            plt.show()

        sliders = {
            k: widgets.SelectionSlider(
                options=v, value=self.defaults()[k], description=k, continuous_update=False
            )
            for k, v in self.params.items()
        }
        return widgets.interactive(show, **sliders)

    def frames(self, dpi: int = 72) -> dict[str, str]:
        """``{"i-j-...": data-URI PNG}`` for every combination of parameter indices."""
        import matplotlib.pyplot as plt

        out = {}
        keys = list(self.params)
        for idx in itertools.product(*(range(len(self.params[k])) for k in keys)):
            fig = self.draw(**{k: self.params[k][i] for k, i in zip(keys, idx)})
            buf = io.BytesIO()
            # no "Software" metadata: the bytes depend only on the pixels
            fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
            plt.close(fig)
            out["-".join(map(str, idx))] = (
                "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            )
        return out

    def static_html(self, dpi: int = 72) -> str:
        """Self-contained HTML: sliders, one image, and the script that switches frames."""
        frames = self.frames(dpi)
        uid = f"nbx-{self.name}"
        start = {k: v.index(self.defaults()[k]) for k, v in self.params.items()}
        rows = []
        for k, values in self.params.items():
            labels = json.dumps([str(v) for v in values])
            rows.append(
                f'<label style="display:block;font-family:sans-serif;font-size:14px">'
                f'<span style="display:inline-block;min-width:9em">{html.escape(k)}</span>'
                f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="{start[k]}"'
                f" data-param=\"{html.escape(k)}\" data-labels='{html.escape(labels)}'"
                f' style="width:16em;vertical-align:middle"> '
                f'<output class="nbx-value">{html.escape(str(values[start[k]]))}</output></label>'
            )
        first = frames["-".join(str(start[k]) for k in self.params)]
        script = f"""
<script>
(function () {{
  var root = document.getElementById("{uid}");
  var frames = {json.dumps(frames)};
  var inputs = root.querySelectorAll("input[type=range]");
  var img = root.querySelector("img.nbx-frame");
  function update() {{
    var key = [];
    inputs.forEach(function (el) {{
      key.push(el.value);
      el.parentNode.querySelector("output").textContent = JSON.parse(el.dataset.labels)[el.value];
    }});
    img.src = frames[key.join("-")];
    img.dataset.key = key.join("-");
  }}
  inputs.forEach(function (el) {{ el.addEventListener("input", update); }});
}})();
</script>"""
        return (
            f'<div id="{uid}" class="nbx-explorer" style="margin:1em 0">'
            + "".join(rows)
            + f'<img class="nbx-frame" alt="{html.escape(self.name)} explorer" src="{first}"'
            f' style="max-width:100%">' + "</div>" + script
        )

    def static(self, dpi: int = 72):
        """The static explorer as an IPython HTML object (displayed by a cell)."""
        from IPython.display import HTML

        return HTML(self.static_html(dpi))
