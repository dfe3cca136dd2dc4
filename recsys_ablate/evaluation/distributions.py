"""The t, normal and chi-square functions the verdicts use, from `scipy.special`.

`scipy.stats` computes each of them with exactly these `scipy.special` calls (SciPy 1.17: `t.ppf` is
`stdtrit`, `t.sf` is `stdtr` at -x, `norm.cdf` is `ndtr`, `norm.ppf` is `ndtri`, `chi2.ppf` is
`2 gammaincinv(df / 2, q)`; with loc 0 and scale 1 its wrappers add nothing), so every number is the
same. Importing `scipy.stats` is what cost every process that loads the verdicts (each command, each
worker and Ray trial) its time, far more than `scipy.special` (measured: BENCHMARKS.md, session 21);
`tests/test_verdicts.py` checks the two agree bit for bit.
"""

from __future__ import annotations

import scipy.special


def t_cdf(x, df):
    """Student's t distribution function (`scipy.stats.t.cdf`)."""
    return scipy.special.stdtr(df, x)


def t_sf(x, df):
    """Student's t survival function, 1 - cdf (`scipy.stats.t.sf`)."""
    return scipy.special.stdtr(df, -x)


def t_ppf(q, df):
    """Student's t quantile (`scipy.stats.t.ppf`) for 0 < q <= 1 (at q = 0 stdtrit gives +inf, not -inf;
    the verdicts ask for 1 - alpha / 2, 1 - alpha and (1 + power) / 2)."""
    return scipy.special.stdtrit(df, q)


def norm_cdf(x):
    """Standard normal distribution function (`scipy.stats.norm.cdf`)."""
    return scipy.special.ndtr(x)


def norm_ppf(q):
    """Standard normal quantile (`scipy.stats.norm.ppf`)."""
    return scipy.special.ndtri(q)


def chi2_ppf(q, df):
    """Chi-square quantile (`scipy.stats.chi2.ppf`)."""
    return 2 * scipy.special.gammaincinv(df / 2, q)
