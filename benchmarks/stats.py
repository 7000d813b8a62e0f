"""Statistics shared by the benchmarks."""

from __future__ import annotations


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bucket_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """``q`` quantile, in ms, of what was observed between two readings,
    interpolated within its bucket as Prometheus' histogram_quantile does."""
    earlier = dict(before)  # a series not there yet counts as 0
    counts = [(le, count - earlier.get(le, 0.0)) for le, count in after]
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            if le == float("inf"):
                return round(lower * 1000, 2)
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return round((lower + (le - lower) * share) * 1000, 2)
        lower, below = le, cumulative
    return round(lower * 1000, 2)
