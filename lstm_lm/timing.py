"""Timing helper shared by `lstm-lm bench` and the PyTorch reference script (no dependencies)."""

import statistics
import time


def median_rate(fn, tokens: int, warmup: int, repeats: int) -> float:
    """Tokens per second of fn(): the median over `repeats` timed calls
    after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return tokens / statistics.median(times)
