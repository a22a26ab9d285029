"""The machinery behind every "check your answer" cell: run the reader's function on named cases,
compare with the reference, and answer with a pass or one specific hint, never a traceback.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Case:
    """One test case: ``args``/``kwargs`` for the reader's function, the ``expected`` value, and a
    ``hint`` that says what a wrong answer on this case usually means."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    expected: Any = None
    hint: str = ""
    rtol: float | None = None  # per-case tolerances (None: the check's own)
    atol: float | None = None


@dataclass
class Result:
    """What a check returns: truthy when every case passed; shows itself as one friendly message."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        return self.message


def _as_array(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def compare(got, expected, *, rtol=1e-5, atol=1e-6) -> str | None:
    """None if ``got`` matches ``expected`` (arrays, tuples of arrays, scalars, bools, strings),
    else a short description of the first difference."""
    if got is None and expected is not None:
        return "no answer yet (the value is None): replace None with your answer"
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            n = len(got) if isinstance(got, (tuple, list)) else "a single value"
            return f"expected a tuple of {len(expected)} values, got {n}"
        for i, (g, e) in enumerate(zip(got, expected)):
            why = compare(g, e, rtol=rtol, atol=atol)
            if why:
                return f"item {i}: {why}"
        return None
    if isinstance(expected, (str, bool)) or expected is None:
        return None if got == expected else f"expected {expected!r}, got {got!r}"
    g, e = _as_array(got), _as_array(expected)
    if g.shape != e.shape:
        return f"expected shape {e.shape}, got shape {g.shape}"
    if not np.issubdtype(g.dtype, np.number) and g.dtype != bool:
        return f"expected numbers, got values of type {g.dtype}"
    if np.isnan(g.astype(np.float64)).any() and not np.isnan(e.astype(np.float64)).any():
        return "your result contains NaN (a division by zero, or a sqrt of a negative number?)"
    if not np.allclose(g, e, rtol=rtol, atol=atol):
        err = np.abs(g.astype(np.float64) - e.astype(np.float64))
        i = np.unravel_index(np.argmax(err), err.shape) if err.ndim else ()
        where = f" at index {tuple(int(j) for j in i)}" if i else ""
        return (
            f"largest difference {err.max():.3g}{where}: expected {float(e[i]):.6g}, "
            f"got {float(g[i]):.6g}"
        )
    return None


def _where(exc) -> str:
    """`` (line N: `code`)`` of the reader's own line that raised (library frames skipped)."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "site-packages" not in f.filename and "/normlib/" not in f.filename.replace("\\", "/")
    ]
    if not frames:
        return ""
    line = (frames[-1].line or "").strip()
    return f" (line {frames[-1].lineno}: `{line}`)" if line else f" (line {frames[-1].lineno})"


def run_cases(
    fn: Callable, cases: list[Case], *, what: str, rtol=1e-5, atol=1e-6, mistakes=()
) -> Result:
    """Run ``fn`` on every case; the first failing case becomes the hint.

    ``mistakes``: ``[(wrong_fn, hint), ...]``, known wrong answers. When the reader's answer on the
    failing case equals ``wrong_fn``'s on the same arguments, that mistake's hint is the message.
    """
    if not callable(fn):
        return Result(False, f"❌ {what}: expected a function, got {type(fn).__name__}.")
    for case in cases:
        args = tuple(np.copy(a) if isinstance(a, np.ndarray) else a for a in case.args)
        try:
            got = fn(*args, **case.kwargs)
        except NotImplementedError:
            return Result(
                False,
                f"❌ {what}: not implemented yet (the function raises "
                "NotImplementedError). Replace the `raise` with your code.",
            )
        except Exception as exc:  # the reader's bug: report it, don't raise it
            return Result(
                False,
                f"❌ {what}, case '{case.name}': your function raised "
                f"{type(exc).__name__}: {exc}{_where(exc)}."
                + (f" Hint: {case.hint}" if case.hint else ""),
            )
        why = compare(
            got,
            case.expected,
            rtol=rtol if case.rtol is None else case.rtol,
            atol=atol if case.atol is None else case.atol,
        )
        if why:
            known = _known_mistake(got, case, mistakes, rtol, atol)
            if known:
                return Result(False, f"❌ {what}, case '{case.name}': {known}")
            hint = f" Hint: {case.hint}" if case.hint else ""
            return Result(False, f"❌ {what}, case '{case.name}': {why}.{hint}")
    return Result(True, f"✅ {what}: all {len(cases)} cases pass.")


def _known_mistake(got, case: Case, mistakes, rtol, atol) -> str | None:
    """The hint of the first mistake whose answer on ``case`` equals ``got``, else None."""
    for wrong, hint in mistakes:
        args = tuple(np.copy(a) if isinstance(a, np.ndarray) else a for a in case.args)
        try:
            with np.errstate(all="ignore"):  # a mistake may well divide by zero
                mistaken = wrong(*args, **case.kwargs)
        except Exception:  # a mistake that does not apply to this case
            continue
        if compare(got, mistaken, rtol=rtol, atol=atol) is None:
            return hint
    return None


def check_value(got, expected, *, what: str, hint: str = "", rtol=1e-5, atol=1e-6) -> Result:
    """Check a single answer (a number, an array, a string) rather than a function."""
    why = compare(got, expected, rtol=rtol, atol=atol)
    if why:
        return Result(False, f"❌ {what}: {why}." + (f" Hint: {hint}" if hint else ""))
    return Result(True, f"✅ {what}: correct.")
