"""A model of data-parallel training across machines, from figures measured on this one:
judge a cluster before renting one. A model, not a measurement (see the assumptions).

Measured here: the compute time of one training step at the per-machine batch b (the very
step `lstm-lm bench` times), the bytes each rank sends per step (every dense gradient, plus
the token rows of layer 0 that the windows of P * b real PTB streams touch together, with
their ids).
Assumed: one rank per machine like this one (its cores for that rank's BLAS); the batch per
machine stays b, so P machines train `--batch-size P*b`; a ring Allreduce, in which each rank
sends 2 (P-1)/P of the buffer in 2 (P-1) messages, at the link's bandwidth plus a latency per
message (25 us at 10 Gb/s TCP, 5 us at 100 Gb/s RDMA); no overlap of communication with
computation (lstm-lm sums the gradients after the backward pass).

    python examples/scaling_model.py --preset small --ptb ../shared/ptb
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lstm_lm.bench import bench  # noqa: E402
from lstm_lm.config import resolve  # noqa: E402
from lstm_lm.data import DataSource, batchify, num_windows, window  # noqa: E402
from lstm_lm.model import LanguageModel  # noqa: E402

LINKS = {"10 Gb/s": (10e9 / 8, 25e-6), "100 Gb/s": (100e9 / 8, 5e-6)}
PROCS = (1, 2, 4, 8, 16, 32, 64)


def distinct_tokens(train: np.ndarray, streams: int, bptt: int, samples: int = 20) -> float:
    """Mean number of distinct tokens in a (streams, bptt) window of the training stream."""
    data = batchify(train, streams)
    n = num_windows(data, bptt)
    picks = np.linspace(0, n - 2, min(samples, n - 1)).astype(int)
    return float(np.mean([len(np.unique(window(data, i, bptt)[0])) for i in picks]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--ptb", type=Path, required=True, help="directory with ptb.*.txt")
    a = ap.parse_args()
    settings = resolve(a.preset, {})
    corpus = DataSource(settings.level, data_dir=str(a.ptb)).load()
    config = settings.model_config(len(corpus.vocab))
    tc = settings.train
    b, T = tc.batch_size, tc.bptt
    measured = bench(config, tc)
    compute = b * T / measured["train_tokens_per_s"]  # seconds per step at batch b
    model = LanguageModel.init(config, np.random.default_rng(0), tc.dtype)
    item, G = model.dtype.itemsize, model.params["l0.b"].size
    dense = model.dense_grads.nbytes
    print(f"{a.preset}: {config.layers} x {config.hidden}, V {config.vocab_size:,}, b {b}, "
          f"T {T}; measured step {compute * 1e3:.1f} ms ({measured['train_tokens_per_s']:,.0f} "
          f"tokens/s), dense gradients {dense / 1e6:.2f} MB\n")  # fmt: skip
    print("| P | token rows touched | MB summed per step | " + " | ".join(
        f"step ms / efficiency at {name}" for name in LINKS) + " |")  # fmt: skip
    print("|---|---|---|" + "---|" * len(LINKS))
    for P in PROCS:
        rows = distinct_tokens(corpus.train, P * b, T)
        size = dense + rows * (G * item + 8)  # the rows and their int64 ids
        cells = []
        for bandwidth, latency in LINKS.values():
            comm = 0.0 if P == 1 else 2 * (P - 1) / P * size / bandwidth + 2 * (P - 1) * latency
            cells.append(f"{(compute + comm) * 1e3:.1f} / {compute / (compute + comm):.0%}")
        sent = f"{size / 1e6:.1f}" if P > 1 else "-"
        print(f"| {P} | {rows:,.0f} | {sent} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
