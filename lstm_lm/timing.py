"""Timing helpers shared by `lstm-lm bench` and the PyTorch reference script (no dependencies)."""

import contextlib
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


_UNTIMED = contextlib.nullcontext()


class Phases:
    """Wall time of the named parts of a step, summed over calls: `with phases("softmax"):`.
    Off (how models are built) it times nothing and costs one call per part."""

    def __init__(self, on: bool = True, clock=time.perf_counter):
        self.on, self.clock = on, clock
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        return self._timed(name) if self.on else _UNTIMED

    @contextlib.contextmanager
    def _timed(self, name: str):
        t0 = self.clock()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.clock() - t0
