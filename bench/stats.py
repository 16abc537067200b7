"""Latency percentiles, one definition for every benchmark (ours and the peers')."""

from __future__ import annotations


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile: a value that was really measured, never an interpolation."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent (user + system, every core) since boot, from
    /proc/stat: a benchmark takes the difference around its measured part, so every process
    of a job's path counts (the broker, the services, the workers, the client), ours or a
    peer's alike."""
    import os

    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    user, nice, system = int(fields[1]), int(fields[2]), int(fields[3])
    irq, softirq = int(fields[6]), int(fields[7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
