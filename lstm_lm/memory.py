"""Memory: what the system can give, what training a configuration needs, bytes for people.

`check_memory` refuses, with the figures, a configuration that cannot fit before anything is
allocated (model.memory_estimate counts what training allocates).
"""

from __future__ import annotations

from lstm_lm import LMError
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.model import memory_estimate


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(config: ModelConfig, tc: TrainConfig) -> None:
    """Refuse, with the figures, a configuration that cannot fit in memory."""
    need = memory_estimate(config, tc.batch_size, tc.bptt, tc.optimizer, tc.dtype, tc.asgd)
    have = available_memory()
    if have is not None and need > have:
        raise LMError(
            f"this model needs about {fmt_bytes(need)} of memory to train ({config.layers} x "
            f"{config.hidden}, vocab {config.vocab_size:,}, batch {tc.batch_size} x bptt "
            f"{tc.bptt}) but {fmt_bytes(have)} is available; use a smaller --hidden, --layers, "
            "--batch-size or --bptt"
        )


def fmt_bytes(n: int) -> str:
    """Bytes in binary units: 852.7 PiB, 23.2 GiB, 512 bytes."""
    if n < 1024:
        return f"{n} bytes"
    power = min(5, (n.bit_length() - 1) // 10)  # 1 KiB ... 5 PiB
    return f"{n / 1024**power:,.1f} {('KiB', 'MiB', 'GiB', 'TiB', 'PiB')[power - 1]}"
