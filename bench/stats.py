"""Latency percentiles, one definition for every benchmark (ours and the peers')."""

from __future__ import annotations


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile: a value that was really measured, never an interpolation."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
