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
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--input-dropout", type=float, default=0.0)
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    V, H, B, T = a.vocab, a.hidden, a.batch_size, a.bptt
    emb, out = torch.nn.Embedding(V, H), torch.nn.Linear(H, V)
    lstm = torch.nn.LSTM(H, H, a.layers, dropout=a.dropout if a.layers > 1 else 0.0)
    # lstm-lm's dropout: on the input of every layer above the first and of the softmax;
    # its input dropout acts on the token's row, here the embedding's output
    drop_in, drop_out = torch.nn.Dropout(a.input_dropout), torch.nn.Dropout(a.dropout)
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    opt = (torch.optim.SGD if a.optimizer == "sgd" else torch.optim.Adam)(params, lr=0.01)
    x, y = torch.randint(0, V, (T, B)), torch.randint(0, V, (T, B))
    state = [torch.zeros(a.layers, B, H), torch.zeros(a.layers, B, H)]

    def train_step():
        nonlocal state
        for m in (drop_in, lstm, drop_out):
            m.train()
        opt.zero_grad()
        hs, (h, c) = lstm(drop_in(emb(x)), tuple(state))
        loss = torch.nn.functional.cross_entropy(out(drop_out(hs)).view(-1, V), y.view(-1)) * T
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state = [h.detach(), c.detach()]

    @torch.no_grad()
    def eval_step():  # without dropout, as lstm-lm's evaluation
        for m in (drop_in, lstm, drop_out):
            m.eval()
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
                "dropout": a.dropout,
                "input_dropout": a.input_dropout,
                "optimizer": a.optimizer,
                "train_tokens_per_s": round(median_rate(train_step, B * T, 3, a.repeats), 1),
                "eval_tokens_per_s": round(median_rate(eval_step, B * T, 3, a.repeats), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
