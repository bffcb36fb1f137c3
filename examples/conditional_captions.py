"""Conditional generation as in image captioning: a feature vector sets the LSTM's initial state.

Each synthetic "image" is a feature vector that encodes a shape, a colour and a size (plus
noise); its caption describes it: "a big red circle". The features set the initial hidden
state through a learned projection, h0 = feat W_proj + b_proj (c0 = 0), and the LSTM then
generates the caption word by word. Captions are then generated, greedy and sampled, for
held-out feature vectors (fresh noise) that the model never saw.

    python examples/conditional_captions.py [--steps 1000]
"""

import argparse
import itertools

import numpy as np

from lstm_lm.cells import layer_backward, layer_forward, layer_init
from lstm_lm.gradcheck import TOLERANCE, entries, max_relative_error
from lstm_lm.losses import softmax_cross_entropy_
from lstm_lm.optim import Adam, clip_global_norm_
from lstm_lm.sampling import draw

SHAPES, COLOURS, SIZES = (
    ["circle", "square", "triangle", "star"],
    ["red", "green", "blue", "yellow"],
    ["small", "big"],
)
VOCAB = ["<bos>", "<eos>", "a", *SIZES, *COLOURS, *SHAPES]
STOI = {w: i for i, w in enumerate(VOCAB)}
COMBOS = list(itertools.product(SHAPES, COLOURS, SIZES))


def make_set(combos, n, rng, noise=0.1):
    """Features (n, F), input ids (n, 5) starting with <bos>,
    target ids (n, 5) ending with <eos>."""
    picks = [combos[i] for i in rng.integers(0, len(combos), n)]
    F = len(SHAPES) + len(COLOURS) + 1
    feats = rng.normal(0, noise, (n, F))
    words = np.empty((n, 6), np.int64)
    for j, (shape, colour, size) in enumerate(picks):
        feats[j, SHAPES.index(shape)] += 1
        feats[j, len(SHAPES) + COLOURS.index(colour)] += 1
        feats[j, -1] += 1 if size == "big" else -1
        words[j] = [STOI[w] for w in ("<bos>", "a", size, colour, shape, "<eos>")]
    return feats, words[:, :-1], words[:, 1:], picks


def init_params(F, H, rng):
    W, b = layer_init("lstm", len(VOCAB), H, rng, scale=0.1)
    return {
        "W_proj": rng.uniform(-0.1, 0.1, (F, H)),
        "b_proj": np.zeros(H),
        "W": W,
        "b": b,
        "Wy": rng.uniform(-0.1, 0.1, (H, len(VOCAB))),
        "by": np.zeros(len(VOCAB)),
    }


def loss_and_grads(P, feats, x, y):
    """Mean NLL per caption word and gradients of every parameter, the projection included."""
    B, T = x.shape
    V = len(VOCAB)
    h0 = feats @ P["W_proj"] + P["b_proj"]  # (B, H)
    onehot = np.eye(V)[x]  # (B, T, V): tiny vocabulary
    hs, _, cache = layer_forward("lstm", onehot, (h0, np.zeros_like(h0)), P["W"], P["b"])
    H = hs.shape[-1]
    logits = hs.reshape(B * T, H) @ P["Wy"] + P["by"]  # (B*T, V)
    nll = softmax_cross_entropy_(logits, y.ravel(), dscale=1.0 / (B * T))
    dlogits = logits
    dhs = (dlogits @ P["Wy"].T).reshape(B, T, H)
    _, dW, db, (dh0, _) = layer_backward(dhs, (None, None), cache)
    return float(nll.mean()), {
        "W_proj": feats.T @ dh0,
        "b_proj": dh0.sum(0),
        "W": dW,
        "b": db,
        "Wy": hs.reshape(B * T, H).T @ dlogits,
        "by": dlogits.sum(0),
    }


def caption(P, feat, rng=None, temperature=1.0):
    """Greedy (rng None) or sampled caption for one feature vector, step by step."""
    h = (feat @ P["W_proj"] + P["b_proj"])[None, :]
    state, tok, words = (h, np.zeros_like(h)), STOI["<bos>"], []
    for _ in range(8):
        hs, state, _ = layer_forward("lstm", np.eye(len(VOCAB))[[[tok]]], state, P["W"], P["b"])
        logits = hs[0, 0] @ P["Wy"] + P["by"]
        tok = int(np.argmax(logits)) if rng is None else draw(logits, rng, temperature)
        if VOCAB[tok] == "<eos>":
            break
        words.append(VOCAB[tok])
    return " ".join(words)


def check_projection_gradient(rng) -> float:
    """Largest relative error of dW_proj and db_proj against numerical gradients (float64)."""
    P = init_params(9, 6, rng)
    for p in P.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    feats, x, y, _ = make_set(COMBOS, 4, rng)
    _, G = loss_and_grads(P, feats, x, y)
    loss = lambda: loss_and_grads(P, feats, x, y)[0]  # noqa: E731
    return max(
        max_relative_error(loss, P[k], G[k], entries(P[k].shape, rng, 30))
        for k in ("W_proj", "b_proj")
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    err = check_projection_gradient(rng)
    print(
        f"gradient check of h0 = feat W_proj + b_proj: largest relative error {err:.1e} "
        f"({'ok' if err < TOLERANCE else 'FAILED'})"
    )
    P = init_params(len(SHAPES) + len(COLOURS) + 1, a.hidden, rng)
    opt = Adam(P)
    for step in range(a.steps):
        feats, x, y, _ = make_set(COMBOS, 32, rng)
        loss, G = loss_and_grads(P, feats, x, y)
        clip_global_norm_(G, 5.0)
        opt.step(P, G, 0.01)
        if step % max(1, a.steps // 8) == 0 or step == a.steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}")

    feats, _, _, picks = make_set(
        COMBOS, 200, np.random.default_rng(a.seed + 1)
    )  # held-out features
    right = sum(caption(P, f) == f"a {s} {c} {sh}" for f, (sh, c, s) in zip(feats, picks))
    print(f"greedy captions of 200 held-out feature vectors: {right}/200 exact")
    for f, (shape, colour, size) in list(zip(feats, picks))[:4]:
        print(
            f"  image of a {size} {colour} {shape}: greedy '{caption(P, f)}', "
            f"sampled '{caption(P, f, rng)}'"
        )


if __name__ == "__main__":
    main()
