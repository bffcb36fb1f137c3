"""PyTorch on the CPU, the speed reference for `lstm-lm bench` (not a dependency of lstm-lm).

The same model as `lstm-lm bench`: torch.nn.Embedding + torch.nn.LSTM + torch.nn.Linear,
float32, SGD (or Adam) with global-norm clipping, synthetic tokens; median tokens/s of
training steps and of evaluation windows. Run it in a separate venv with torch installed:

    python examples/bench_pytorch.py --layers 2 --hidden 200 --batch-size 20 --bptt 20 --threads 2
    python examples/bench_pytorch.py --level char --layers 1 --hidden 512 --vocab 50 \
        --batch-size 32 --bptt 50 --optimizer adam --dropout 0.2

What enters the LSTM is the fair comparison's crux. lstm-lm feeds layer 0 the one-hot token:
V wide. At the character level that is the whole model (char-rnn's LSTM also reads the
one-hot character), so the reference's embedding is V wide too (`--level char`: --emb V, a
learned (V, V) matrix in place of the identity, the same products). At the word level the
published models (Zaremba et al.'s, PyTorch's word_language_model) embed a word in H
dimensions, and lstm-lm's one-hot rows of W are that embedding folded into the gates, so the
reference is the published model (--emb H). `--tied` is word_language_model's --tied (emb H,
decoder.weight = encoder.weight), lstm-lm's --tied; `--emb N` measures any other width. The
JSON says which input was measured.
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
    ap.add_argument(
        "--level",
        choices=("word", "char"),
        default="word",
        help="sets the default --emb: H for words, V for characters",
    )
    ap.add_argument("--emb", type=int, help="embedding width (default: by --level)")
    ap.add_argument("--tied", action="store_true", help="decoder.weight = encoder.weight")
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
    E = a.emb or (V if a.level == "char" and not a.tied else H)
    if a.tied and E != H:
        ap.error("--tied needs --emb equal to --hidden")
    emb, out = torch.nn.Embedding(V, E), torch.nn.Linear(H, V)
    if a.tied:
        out.weight = emb.weight
    lstm = torch.nn.LSTM(E, H, a.layers, dropout=a.dropout if a.layers > 1 else 0.0)
    # lstm-lm's dropout: on the input of every layer above the first and of the softmax;
    # its input dropout acts on the token's row, here the embedding's output
    drop_in, drop_out = torch.nn.Dropout(a.input_dropout), torch.nn.Dropout(a.dropout)
    params = list({id(p): p for m in (emb, lstm, out) for p in m.parameters()}.values())
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
                "level": a.level,
                "emb": E,
                "input": "one-hot width (V)" if E == V else "published (H)" if E == H else "other",
                "tied": a.tied,
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
