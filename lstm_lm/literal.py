"""The LSTM language model written literally: one token at a time, batch 1, a dense one-hot
vector concatenated with h, four separate matmuls per step.

Slow on purpose. It is the reference the fast path is tested against (same loss and
gradients to 1e-10 in float64) and the baseline `lstm-lm bench --literal` measures.
It works on contract-named arrays (`l0.Wf`, ..., `Wy`, `by`); V vocabulary, H hidden.
"""

from __future__ import annotations

import numpy as np

from lstm_lm.cells import CELL_TYPES
from lstm_lm.dropout import Masks

GATES = ("f", "i", "c", "o")
PACKED = CELL_TYPES["lstm"].gates  # order of the gate blocks in the packed columns (and masks)


def _sigmoid(a):
    return 0.5 * np.tanh(0.5 * a) + 0.5


def literal_loss_and_grads(
    P: dict[str, np.ndarray],
    layers: int,
    x: np.ndarray,
    y: np.ndarray,
    state,
    masks=None,
    scale: float = 1.0,
):
    """x, y: (B, T) ids; state: per layer (h, c), each (B, H); masks: dropout.Masks as
    LanguageModel.draw_masks gives them (variational ones of one step), or None. Each of the
    B streams is run on its own, batch 1.
    Returns (mean NLL, grads by contract name, final state, dstate0) like LanguageModel."""
    B, T = x.shape
    H, V = P["Wy"].shape
    masks = masks or Masks.none(layers)

    def at(m, t, b):  # a mask's entries at step t of stream b (one step: the window's)
        return m[min(t, len(m) - 1), b]

    def Wh(k, n):  # the recurrent rows of gate n, with weight drop where it is on
        W, m = P[f"l{k}.W{n}"][:H], masks.recurrent[k]
        j = PACKED.index(n)
        return W if m is None else W * m[:, j * H : (j + 1) * H]

    N = B * T
    G = {k: np.zeros_like(a) for k, a in P.items()}
    total = 0.0
    final = [tuple(np.zeros_like(s) for s in state[k]) for k in range(layers)]
    dstate0 = [tuple(np.zeros_like(s) for s in state[k]) for k in range(layers)]
    for b in range(B):
        h = [state[k][0][b].copy() for k in range(layers)]
        c = [state[k][1][b].copy() for k in range(layers)]
        tape = []
        for t in range(T):
            step = []
            inp = np.zeros(V)
            inp[x[b, t]] = 1.0
            for k in range(layers):
                if k > 0 and masks.layers[k - 1] is not None:
                    inp = inp * at(masks.layers[k - 1], t, b)
                z = np.concatenate([h[k], inp])  # (H + D,)
                m = {n: np.ones(H) for n in GATES}  # dropout on the x part of layer 0's gates
                if k == 0 and masks.tokens is not None:
                    m = {
                        n: at(masks.tokens, t, b)[j * H : (j + 1) * H] for j, n in enumerate(PACKED)
                    }
                if k == 0 and masks.words is not None:
                    m = {n: v * masks.words[x[b, t]] for n, v in m.items()}

                def pre(n, z=z, k=k, m=m):
                    W = P[f"l{k}.W{n}"]
                    return z[:H] @ Wh(k, n) + m[n] * (z[H:] @ W[H:]) + P[f"l{k}.b{n}"]

                f, i, g, o = (
                    _sigmoid(pre("f")),
                    _sigmoid(pre("i")),
                    np.tanh(pre("c")),
                    _sigmoid(pre("o")),
                )
                c_prev = c[k]
                c[k] = f * c_prev + i * g
                h[k] = o * np.tanh(c[k])
                step.append((z, m, f, i, g, o, c_prev, np.tanh(c[k])))
                inp = h[k]
            top = inp if masks.layers[-1] is None else inp * at(masks.layers[-1], t, b)
            logits = top @ P["Wy"] + P["by"]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            total -= np.log(p[y[b, t]])
            tape.append((step, top, p))
        for k in range(layers):
            final[k][0][b], final[k][1][b] = h[k], c[k]

        dh_next = [np.zeros(H) for _ in range(layers)]
        dc_next = [np.zeros(H) for _ in range(layers)]
        for t in reversed(range(T)):
            step, top, p = tape[t]
            dlogits = p.copy()
            dlogits[y[b, t]] -= 1.0
            dlogits *= scale / N
            G["Wy"] += np.outer(top, dlogits)
            G["by"] += dlogits
            dabove = P["Wy"] @ dlogits
            if masks.layers[-1] is not None:
                dabove = dabove * at(masks.layers[-1], t, b)
            for k in reversed(range(layers)):
                z, m, f, i, g, o, c_prev, tanh_c = step[k]
                dh = dabove + dh_next[k]
                do = dh * tanh_c
                dc = dc_next[k] + dh * o * (1 - tanh_c**2)
                da = {
                    "f": dc * c_prev * f * (1 - f),
                    "i": dc * g * i * (1 - i),
                    "c": dc * i * (1 - g**2),
                    "o": do * o * (1 - o),
                }
                dz = np.zeros_like(z)
                for name in GATES:
                    W, dW, dx = P[f"l{k}.W{name}"], G[f"l{k}.W{name}"], da[name] * m[name]
                    dWh = np.outer(z[:H], da[name])
                    if masks.recurrent[k] is not None:
                        j = PACKED.index(name)
                        dWh *= masks.recurrent[k][:, j * H : (j + 1) * H]
                    dW[:H] += dWh
                    dW[H:] += np.outer(z[H:], dx)
                    G[f"l{k}.b{name}"] += da[name]
                    dz[:H] += Wh(k, name) @ da[name]
                    dz[H:] += W[H:] @ dx
                dh_next[k], dc_next[k] = dz[:H], dc * f
                dabove = dz[H:]
                if k > 0 and masks.layers[k - 1] is not None:
                    dabove = dabove * at(masks.layers[k - 1], t, b)
        for k in range(layers):
            dstate0[k][0][b], dstate0[k][1][b] = dh_next[k], dc_next[k]
    return total / N, G, final, dstate0
