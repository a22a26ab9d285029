"""Ways to compute a mean and a variance, and how they fail in low precision.

Every norm needs ``mean`` and ``var`` of a set of numbers. Four algorithms, all exact in real
arithmetic, differ a lot in floating point:

- ``naive``: ``E[x^2] - E[x]^2`` in one pass. Cancels catastrophically when ``|mean| >> std``.
- ``two_pass``: the mean first, then ``E[(x - mean)^2]``. Accurate; reads the data twice.
- ``welford``: one pass, updating ``(count, mean, M2)`` per element (Welford, 1962).
- ``shifted``: one pass of sums of ``x - K`` for a shift ``K`` near the mean (e.g. ``x[0]``).

``chan_merge`` combines two partial ``(count, mean, M2)`` results exactly (Chan, Golub & LeVeque,
1979): the tool that lets GPU blocks and distributed ranks compute statistics in parallel.
All functions take a 1-D array and do their arithmetic in the array's dtype, on purpose.
"""

from __future__ import annotations

import numpy as np


def naive_var(x):
    """``E[x^2] - E[x]^2``, accumulated sequentially in ``x.dtype``. Returns ``(mean, var)``."""
    x = np.asarray(x)
    n = x.dtype.type(x.size)
    s = np.cumsum(x, dtype=x.dtype)[-1]  # sequential sum, as a simple loop would compute it
    s2 = np.cumsum(x * x, dtype=x.dtype)[-1]
    mean = s / n
    return mean, s2 / n - mean * mean


def two_pass_var(x):
    """Mean first, then the mean of squared deviations, in ``x.dtype``. Returns ``(mean, var)``."""
    x = np.asarray(x)
    n = x.dtype.type(x.size)
    mean = np.cumsum(x, dtype=x.dtype)[-1] / n
    d = x - mean
    return mean, np.cumsum(d * d, dtype=x.dtype)[-1] / n


def shifted_var(x, shift=None):
    """Sums of ``x - K`` (``K = x[0]`` by default): cancels only ``|mean - K|``, not ``|mean|``."""
    x = np.asarray(x)
    k = x[0] if shift is None else x.dtype.type(shift)
    n = x.dtype.type(x.size)
    d = x - k
    s = np.cumsum(d, dtype=x.dtype)[-1]
    s2 = np.cumsum(d * d, dtype=x.dtype)[-1]
    mean_d = s / n
    return k + mean_d, s2 / n - mean_d * mean_d


def welford(x):
    """Welford's online update in ``x.dtype``: ``(count, mean, M2)``, with ``var = M2 / count``.

    count += 1;  delta = x - mean;  mean += delta / count;  M2 += delta * (x - mean)
    """
    x = np.asarray(x)
    one = x.dtype.type(1)
    count, mean, m2 = x.dtype.type(0), x.dtype.type(0), x.dtype.type(0)
    for xi in x:
        count += one
        delta = xi - mean
        mean += delta / count
        m2 += delta * (xi - mean)
    return count, mean, m2


def chan_merge(a, b):
    """Merge two ``(count, mean, M2)`` triples into the triple of the union (Chan et al., 1979).

        n = n_a + n_b;  delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n;  M2 = M2_a + M2_b + delta^2 * n_a * n_b / n

    An empty part (``count == 0``) leaves the other unchanged.
    """
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    if n == 0:
        return a
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)
    return n, mean, m2


def chunked_welford(x, chunks):
    """Welford on each of ``chunks`` pieces (as parallel programs would), merged with Chan.
    Returns ``(mean, var)``."""
    parts = [welford(p) for p in np.array_split(np.asarray(x), chunks)]
    total = parts[0]
    for part in parts[1:]:
        total = chan_merge(total, part)
    count, mean, m2 = total
    return mean, m2 / count
