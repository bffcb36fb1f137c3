"""Sequence regression with the library's LSTM layer: read sin(t), predict cos(t).

Continuous input (D = 1), one LSTM layer, a linear read-out and mean squared error, trained
with truncated BPTT: B long waves (random phase and frequency) are cut into windows of T
steps and the state is carried from one window to the next. cos(t) is not a function of
sin(t) alone (both +cos and -cos go with the same sin), so the LSTM has to remember which
way the wave is going. Writes a PNG plot if matplotlib is installed (it is optional).

    python examples/sin_to_cos.py [--steps 600] [--plot sin_to_cos.png]
"""

import argparse

import numpy as np

from lstm_lm.cells import layer_backward, layer_forward, layer_init
from lstm_lm.optim import Adam, clip_global_norm_


def waves(B: int, L: int, rng):
    """x = sin(w t + p), y = cos(w t + p): (B, L, 1) each, w and p random per stream."""
    w = rng.uniform(0.05, 0.2, (B, 1))
    p = rng.uniform(0, 2 * np.pi, (B, 1))
    phase = w * np.arange(L) + p
    return np.sin(phase)[..., None], np.cos(phase)[..., None]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--bptt", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="sin_to_cos.png")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    B, T, H = 16, a.bptt, a.hidden
    W, b = layer_init("lstm", 1, H, rng, scale=0.3)
    P = {"W": W, "b": b, "Wo": rng.uniform(-0.3, 0.3, (H, 1)), "bo": np.zeros(1)}
    opt = Adam(P)
    x_all, y_all = waves(B, T * a.steps, rng)
    state = (np.zeros((B, H)), np.zeros((B, H)))
    print("step   MSE     (predicting 0 everywhere: 0.5)")
    for step in range(a.steps):
        x, y = x_all[:, step * T : (step + 1) * T], y_all[:, step * T : (step + 1) * T]
        hs, state_T, cache = layer_forward("lstm", x, state, P["W"], P["b"])  # hs: (B, T, H)
        pred = hs @ P["Wo"] + P["bo"]  # (B, T, 1)
        mse = float(((pred - y) ** 2).mean())
        dpred = 2 * (pred - y) / pred.size
        dx, dW, db, _ = layer_backward(dpred @ P["Wo"].T, (None, None), cache)
        G = {
            "W": dW,
            "b": db,
            "Wo": hs.reshape(-1, H).T @ dpred.reshape(-1, 1),
            "bo": dpred.sum((0, 1)),
        }
        clip_global_norm_(G, 1.0)
        opt.step(P, G, 0.01)
        state = state_T  # carried into the next window, not backpropagated through
        if step % max(1, a.steps // 10) == 0 or step == a.steps - 1:
            print(f"{step:5d}  {mse:.4f}")

    x, y = waves(1, 300, np.random.default_rng(a.seed + 1))  # a fresh wave, from a zero state
    hs, _, _ = layer_forward("lstm", x, (np.zeros((1, H)), np.zeros((1, H))), P["W"], P["b"])
    pred = hs @ P["Wo"] + P["bo"]
    print(
        f"held-out wave: MSE {float(((pred - y) ** 2).mean()):.4f} "
        f"(after the first 20 steps: {float(((pred - y)[:, 20:] ** 2).mean()):.4f})"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(x[0, :, 0], label="input sin", alpha=0.5)
    ax.plot(y[0, :, 0], label="target cos")
    ax.plot(pred[0, :, 0], "--", label="LSTM")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=100)
    print(f"plot written to {a.plot}")


if __name__ == "__main__":
    main()
