"""PyTorch on the CPU, the speed reference for `lstm-lm bench` (not a dependency of lstm-lm).

The same model as `lstm-lm bench`: torch.nn.Embedding + torch.nn.LSTM + torch.nn.Linear,
float32, SGD with global-norm clipping, synthetic tokens; median tokens/s of training
steps and of evaluation windows. Run it in a separate venv with torch installed:

    python examples/bench_pytorch.py --layers 2 --hidden 200 --batch-size 20 --bptt 20 --threads 2
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # time it exactly as lstm-lm bench does
from lstm_lm.timing import median_rate  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--bptt", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    V, H, B, T = a.vocab, a.hidden, a.batch_size, a.bptt
    emb, lstm, out = torch.nn.Embedding(V, H), torch.nn.LSTM(H, H, a.layers), torch.nn.Linear(H, V)
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    opt = torch.optim.SGD(params, lr=0.01)
    x, y = torch.randint(0, V, (T, B)), torch.randint(0, V, (T, B))
    state = [torch.zeros(a.layers, B, H), torch.zeros(a.layers, B, H)]

    def train_step():
        nonlocal state
        opt.zero_grad()
        hs, (h, c) = lstm(emb(x), tuple(state))
        loss = torch.nn.functional.cross_entropy(out(hs).view(-1, V), y.view(-1)) * T
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state = [h.detach(), c.detach()]

    @torch.no_grad()
    def eval_step():
        hs, _ = lstm(emb(x), tuple(state))
        torch.nn.functional.cross_entropy(out(hs).view(-1, V), y.view(-1), reduction="sum")

    print(
        json.dumps(
            {
                "framework": f"torch {torch.__version__}",
                "threads": a.threads,
                "layers": a.layers,
                "hidden": H,
                "vocab": V,
                "batch_size": B,
                "bptt": T,
                "train_tokens_per_s": round(median_rate(train_step, B * T, 3, a.repeats), 1),
                "eval_tokens_per_s": round(median_rate(eval_step, B * T, 3, a.repeats), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
