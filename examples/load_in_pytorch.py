"""Load a model exported by `lstm-lm export` into PyTorch and evaluate it there.

    lstm-lm export runs/small runs/small.safetensors
    python examples/load_in_pytorch.py runs/small.safetensors [--text FILE]

The same network from standard modules: an nn.Embedding holding layer 0's token rows (a
one-hot input times W is a row of W, so the rows give each token's gate inputs), nn.LSTM,
whose layer 0 takes those gate inputs through an identity input weight, and an nn.Linear
read-out, or for a model trained with --softmax adaptive nn.AdaptiveLogSoftmaxWithLoss: its
head.weight/bias are lstm-lm's head.W/b, its tail.{i}.0.weight tail.{i}.P, its
tail.{i}.1.weight/bias tail.{i}.W/b (weights transposed; lstm-lm's tails have a bias, so
their second Linear gets one), and its targets are the words' frequency ranks (`order`).
A model trained with --tied is PyTorch's `word_language_model --tied`: an nn.Embedding
holding E (V, H), nn.LSTM whose layer 0 takes it through its input weight, and a read-out
whose weight is the embedding's (`decoder.weight = encoder.weight`).
It prints the perplexity of the run's test split (or of --text FILE) computed as
`lstm-lm eval --batch-size 1 --json` computes it: one stream, every target counted. Needs torch and
safetensors, which lstm-lm itself never depends on; run it in a separate venv.
"""

import argparse
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

TORCH_GATES = "ifco"  # nn.LSTM's blocks: input, forget, cell (g), output; lstm-lm's are named


def load(path: str):
    with safe_open(path, framework="pt") as f:
        W = {k: f.get_tensor(k) for k in f.keys()}  # float32, as trained
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    config, vocab = meta["config"], meta["vocab"]
    assert config["cell"] == "lstm", "this example builds LSTMs"
    H, L, V = config["hidden"], config["layers"], config["vocab_size"]

    def blocks(k, rows):  # lstm-lm's W{g} (H + D, H), rows [h; x] -> nn.LSTM's (4H, D)
        return torch.cat([W[f"l{k}.W{g}"][rows].T for g in TORCH_GATES])

    tied = config.get("tied", False)
    embedding = torch.nn.Embedding(V, H if tied else 4 * H)
    lstm = torch.nn.LSTM(H if tied else 4 * H, H, num_layers=L)
    readout = adaptive(W, config) if config.get("softmax") == "adaptive" else Readout(H, V)
    with torch.no_grad():
        if tied:
            embedding.weight.copy_(W["E"])
            readout.linear.weight = embedding.weight  # decoder.weight = encoder.weight
        else:  # (V, 4H): each token's gate inputs
            embedding.weight.copy_(blocks(0, slice(H, None)).T)
        for k in range(L):
            getattr(lstm, f"weight_hh_l{k}").copy_(blocks(k, slice(None, H)))
            getattr(lstm, f"weight_ih_l{k}").copy_(
                torch.eye(4 * H) if k == 0 and not tied else blocks(k, slice(H, None))
            )
            getattr(lstm, f"bias_ih_l{k}").copy_(torch.cat([W[f"l{k}.b{g}"] for g in TORCH_GATES]))
            getattr(lstm, f"bias_hh_l{k}").zero_()
        if isinstance(readout, Readout):
            if not tied:
                readout.linear.weight.copy_(W["Wy"].T)
            readout.linear.bias.copy_(W["by"])
    return embedding, lstm, readout, vocab, meta


class Readout(torch.nn.Module):
    """The full softmax: summed NLL of the targets."""

    def __init__(self, H: int, V: int):
        super().__init__()
        self.linear = torch.nn.Linear(H, V)

    def forward(self, hs, target):
        return torch.nn.functional.cross_entropy(self.linear(hs), target, reduction="sum")


class Adaptive(torch.nn.Module):
    """nn.AdaptiveLogSoftmaxWithLoss over the words' frequency ranks: summed NLL."""

    def __init__(self, asm, order):
        super().__init__()
        self.asm = asm
        self.rank = torch.empty_like(order)
        self.rank[order] = torch.arange(len(order))

    def forward(self, hs, target):
        return -self.asm(hs, self.rank[target]).output.sum()


def adaptive(W: dict, config: dict) -> Adaptive:
    H, V, cutoffs = config["hidden"], config["vocab_size"], config["cutoffs"]
    asm = torch.nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs, div_value=4.0, head_bias=True)
    state = {"head.weight": W["head.W"].T, "head.bias": W["head.b"]}
    for i in range(len(cutoffs)):
        P, Wt = W[f"tail.{i}.P"], W[f"tail.{i}.W"]  # (H, d), (d, V_i)
        asm.tail[i] = torch.nn.Sequential(
            torch.nn.Linear(H, P.shape[1], bias=False), torch.nn.Linear(*Wt.shape)
        )
        state.update({f"tail.{i}.0.weight": P.T, f"tail.{i}.1.weight": Wt.T,
                      f"tail.{i}.1.bias": W[f"tail.{i}.b"]})  # fmt: skip
    asm.load_state_dict({k: v.contiguous() for k, v in state.items()})
    return Adaptive(asm, W["order"])


def tokens(text: str, vocab: dict) -> list[int]:
    """The text's ids as lstm-lm reads a split: a line break is <eos>; unknown words <unk>."""
    stoi = {s: i for i, s in enumerate(vocab["itos"])}
    text = text if text.endswith("\n") else text + "\n"
    if vocab["level"] == "word":
        toks = text.replace("\n", " <eos> ").split()
    elif vocab["ptb_chars"]:  # the characters of each word, `_` between words
        chars = "\n".join("_".join(line.split()) for line in text.split("\n"))
        toks = ["<eos>" if c == "\n" else c for c in chars]
    else:
        toks = list(text)
    unk = stoi.get("<unk>")
    ids = [stoi.get(t, unk) for t in toks]
    return [i for i in ids if i is not None]


@torch.no_grad()
def evaluate(embedding, lstm, readout, ids: list[int], chunk: int = 1000) -> tuple[float, int]:
    """Summed NLL of ids[1:], each given all before it (the state carried across chunks)."""
    x = torch.tensor(ids)
    state, total = None, 0.0
    for s in range(0, len(ids) - 1, chunk):
        inp, target = x[s : s + chunk], x[s + 1 : s + 1 + chunk]
        inp = inp[: len(target)]
        hs, state = lstm(embedding(inp)[:, None, :], state)  # (T, 1, H): time-major, batch 1
        total += readout(hs[:, 0], target).item()
    return total, len(ids) - 1


def test_file(data: dict) -> str:
    """The test split of the run's data (its source, as the checkpoint records it)."""
    if data["kind"] == "ptb":
        return str(Path(data["dir"]) / "ptb.test.txt")
    if data.get("test"):
        return data["test"]
    d = Path(data["data"])
    return str(d / "ptb.test.txt" if (d / "ptb.test.txt").exists() else d / "test.txt")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a .safetensors file written by lstm-lm export")
    ap.add_argument("--text", help="evaluate this file (default: the run's test split)")
    a = ap.parse_args()
    embedding, lstm, readout, vocab, meta = load(a.model)
    text = a.text or test_file(meta["data"])
    nll, n = evaluate(embedding, lstm, readout, tokens(Path(text).read_text(), vocab))
    print(json.dumps({"split": text, "tokens": n, "nll": nll / n, "ppl": math.exp(nll / n)}))


if __name__ == "__main__":
    main()
