"""Recurrent cells and input projections as forward/backward pairs over a whole window.

Dimensions: T time steps, B streams (minibatch), H hidden units, D input features,
V vocabulary, G gate columns (4H for the LSTM).

Arrays are time-major, (T, B, ...), so each step works on a contiguous slice. A cell's
weights act on the concatenation [h, x]: W is (H + D, G), rows ordered [h; x]. The x rows
are applied to all T steps at once before the time loop (the input projection: a row
gather for one-hot tokens, one GEMM for dense inputs), so the loop does one GEMM per step,
h_prev @ W[:H], for all gates together. Every `*_forward` returns (out, cache) and every
`*_backward(dout, cache)` returns gradients without touching its inputs or the cache.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def sigmoid_(a: np.ndarray) -> np.ndarray:
    """In-place logistic sigmoid as 0.5 * tanh(a / 2) + 0.5: no overflow for any a."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


# ---------------------------------------------------------------------------------------
# Input projections: the [x] part of [h, x] W, for all T steps at once.

def embed_forward(tokens: np.ndarray, Wx: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One-hot input without the one-hot: x W = W[token].

    tokens: (T, B) int ids; Wx: (V, G) the x rows of W; b: (G,).
    Returns xproj: (T, B, G).
    """
    xproj = Wx[tokens]
    xproj += b
    return xproj


def embed_backward(dxproj: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the token rows, sparse: the U distinct tokens of the window and their rows.

    dxproj: (T, B, G); tokens: (T, B). Returns rows (U,) sorted ids and drows (U, G), the
    sum of dxproj over each token's positions (a segmented sum after sorting, not a
    product with a one-hot matrix). Every other row of dWx is zero.
    """
    flat = tokens.ravel()
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return ids[starts], np.add.reduceat(dxproj.reshape(-1, dxproj.shape[-1])[order], starts, axis=0)


def linear_forward(x: np.ndarray, Wx: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x: (T, B, D); Wx: (D, G); b: (G,). Returns x Wx + b: (T, B, G)."""
    T, B, D = x.shape
    out = (x.reshape(T * B, D) @ Wx).reshape(T, B, -1)
    out += b
    return out


def linear_backward(dout: np.ndarray, x: np.ndarray, Wx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dout: (T, B, G); x: (T, B, D). Returns dx (T, B, D) and dWx (D, G)."""
    T, B, G = dout.shape
    d2 = dout.reshape(T * B, G)
    return (d2 @ Wx.T).reshape(T, B, -1), x.reshape(T * B, -1).T @ d2


# ---------------------------------------------------------------------------------------
# LSTM:  f = s(a_f)  i = s(a_i)  o = s(a_o)  g = tanh(a_c),  a = [h, x] W + b
#        c = f * c_prev + i * g,  h = o * tanh(c)
# Columns are packed [f | i | o | c], so the three sigmoid gates are one contiguous block.

class LSTMCache(NamedTuple):
    h: np.ndarray       # (T+1, B, H)  h[0] is the initial state
    c: np.ndarray       # (T+1, B, H)
    act: np.ndarray     # (T, B, 4H)   gate activations f, i, o, g
    tanh_c: np.ndarray  # (T, B, H)
    Wh: np.ndarray      # (H, 4H)


def lstm_forward(xproj: np.ndarray, state0: tuple[np.ndarray, np.ndarray], Wh: np.ndarray):
    """Run an LSTM layer over a window.

    xproj: (T, B, 4H) input projection x W[H:] + b; state0: (h0, c0), each (B, H);
    Wh: (H, 4H) = W[:H].
    Returns hs (T, B, H), the final state (hT, cT), each (B, H), and the cache.
    """
    T, B, G = xproj.shape
    H = G // 4
    h = np.empty((T + 1, B, H), xproj.dtype)
    c = np.empty_like(h)
    act = np.empty_like(xproj)
    tanh_c = np.empty((T, B, H), xproj.dtype)
    ig = np.empty((B, H), xproj.dtype)
    h[0], c[0] = state0
    for t in range(T):
        a = act[t]
        np.matmul(h[t], Wh, out=a)
        a += xproj[t]
        sigmoid_(a[:, :3 * H])
        np.tanh(a[:, 3 * H:], out=a[:, 3 * H:])
        f, i, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.multiply(f, c[t], out=c[t + 1])
        np.multiply(i, g, out=ig)
        c[t + 1] += ig
        np.tanh(c[t + 1], out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=h[t + 1])
    return h[1:], (h[T], c[T]), LSTMCache(h, c, act, tanh_c, Wh)


def lstm_backward(dhs: np.ndarray, dstate: tuple[np.ndarray | None, np.ndarray | None],
                  cache: LSTMCache):
    """Backward through the window.

    dhs: (T, B, H) loss gradient on each step's output h; dstate: (dhT, dcT), gradients
    on the final state (None for zero).
    Returns dxproj (T, B, 4H), dWh (H, 4H) and (dh0, dc0), each (B, H).
    """
    h, c, act, tanh_c, Wh = cache
    T, B, G = act.shape
    H = G // 4
    dt = act.dtype
    da = np.empty_like(act)
    dh = np.empty((B, H), dt)
    dh_next = np.zeros((B, H), dt) if dstate[0] is None else dstate[0].astype(dt, copy=True)
    dc = np.zeros((B, H), dt) if dstate[1] is None else dstate[1].astype(dt, copy=True)
    tmp = np.empty((B, H), dt)
    dsig = np.empty((B, 3 * H), dt)
    for t in reversed(range(T)):
        a, d = act[t], da[t]
        f, i, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        df, di, do, dg = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
        np.add(dhs[t], dh_next, out=dh)
        np.multiply(dh, tanh_c[t], out=do)
        # dc += dh * o * (1 - tanh(c)^2)
        np.multiply(tanh_c[t], tanh_c[t], out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        np.multiply(dc, c[t], out=df)
        np.multiply(dc, g, out=di)
        np.multiply(dc, i, out=dg)
        dc *= f  # now dc_prev
        # through the nonlinearities: s' = s (1 - s), tanh' = 1 - tanh^2
        np.subtract(1, a[:, :3 * H], out=dsig)
        dsig *= a[:, :3 * H]
        d[:, :3 * H] *= dsig
        np.multiply(g, g, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dg *= tmp
        np.matmul(d, Wh.T, out=dh_next)
    dWh = h[:-1].reshape(T * B, H).T @ da.reshape(T * B, G)
    return da, dWh, (dh_next, dc)


class Cell(NamedTuple):
    """What the model needs to know about a cell type."""
    gates: tuple[str, ...]  # names of the column blocks of W and b, in order
    n_state: int            # arrays in the recurrent state (h, c for the LSTM)
    forward: object
    backward: object


CELL_TYPES = {
    "lstm": Cell(("f", "i", "o", "c"), 2, lstm_forward, lstm_backward),
}
