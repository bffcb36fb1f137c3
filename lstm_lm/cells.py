"""Recurrent cells and input projections as forward/backward pairs over a whole window.

Dimensions: T time steps, B streams (minibatch), H hidden units, D input features,
V vocabulary, G gate columns (4H for the LSTM).

Arrays are time-major, (T, B, ...), so each step works on a contiguous slice. A cell's
weights act on the concatenation [h, x]: W is (H + D, G), rows ordered [h; x]. The x rows
are applied to all T steps at once before the time loop (the input projection: a row
gather for one-hot tokens, one GEMM for dense inputs), so the loop does one GEMM per step,
h_prev @ W[:H], for all gates together (the LSTM's as W[:H].T @ h_prev, feature-major).
Every `*_forward` returns (out, cache) and every `*_backward(dout, cache)` returns
gradients without touching its inputs or the cache.
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


# Rows this many bytes apart (or a multiple) share a cache set, and a transposed copy that
# walks down them misses at every step: one of a char window, (50, 32, 2,048) float32, 6.6 ms
# straight, 2.5 ms through rows padded by a cache line (measured, AMD EPYC).
CACHE_SET_STRIDE = 4096


def transposed(W: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """W.T as a C-contiguous copy, (G, H) from (H, G). A time loop that multiplies by W.T at
    every step (the LSTM's forward, the other cells' backward) is 20-25% faster with a
    contiguous matrix than with a transposed view (measured: (32, 2,048) x (2,048, 512) 411 vs
    509 us). Copied by blocks of rows, as one strided copy of a 512-row matrix is 2.6x slower:
    of 64 rows, or of 8 where rows sit a multiple of CACHE_SET_STRIDE apart, whose blocks of 64
    share one cache set (AMD EPYC, float32: (512, 2,048) 3.2 ms by 64 rows, 0.9 ms by 8;
    (650, 2,600) 1.4 ms by 64, 3.8 by 8). Into `out` (G, H), a view, where given."""
    out = np.empty(W.shape[::-1], W.dtype) if out is None else out
    rows = 8 if (W.shape[1] * W.itemsize) % CACHE_SET_STRIDE == 0 else 64
    for r in range(0, W.shape[0], rows):
        out[:, r : r + rows] = W[r : r + rows].T
    return out


# ---------------------------------------------------------------------------------------
# Input projections: the [x] part of [h, x] W, for all T steps at once.


def embed_forward(
    tokens: np.ndarray, Wx: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """One-hot input without the one-hot: x W = W[token].

    tokens: (T, B) int ids; Wx: (V, G) the x rows of W; b: (G,); mask: (T, B, G) dropout
    on the token's contribution (not on the bias), or None.
    Returns xproj: (T, B, G).
    """
    xproj = Wx[tokens]
    if mask is not None:
        xproj *= mask
    xproj += b
    return xproj


# Windows with at most this many distinct tokens sum their token rows' gradients as one
# GEMM with the one-hot matrix of positions (U x N x G multiply-adds), others by a segmented
# sum after sorting (measured, 2 cores of a Xeon: char level, U 50 of N 1,600, G 2,048:
# 1.9 ms vs 20 ms; U ~ 400 of 400, G 800: 0.8 vs 1.1 ms; U ~ 700 of 700, G 2,600: equal).
ONE_HOT_ROWS = 512


def embed_backward(dxproj: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the token rows, sparse: the U distinct tokens of the window and their rows.

    dxproj: (T, B, G); tokens: (T, B). Returns rows (U,) sorted ids and drows (U, G), the
    sum of dxproj over each token's positions (a product with the (U, N) one-hot matrix of
    positions when U is small, else a segmented sum after sorting). Every other row of dWx
    is zero.
    """
    flat = tokens.ravel()
    d2 = dxproj.reshape(-1, dxproj.shape[-1])  # (N, G)
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    new = np.r_[True, ids[1:] != ids[:-1]]
    starts = np.flatnonzero(new)
    if len(starts) > ONE_HOT_ROWS:
        return ids[starts], np.add.reduceat(d2[order], starts, axis=0)
    onehot = np.zeros((len(starts), len(flat)), dxproj.dtype)  # (U, N)
    onehot[np.cumsum(new) - 1, order] = 1
    return ids[starts], onehot @ d2


def linear_forward(x: np.ndarray, Wx: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x: (T, B, D); Wx: (D, G); b: (G,). Returns x Wx + b: (T, B, G)."""
    T, B, D = x.shape
    out = (x.reshape(T * B, D) @ Wx).reshape(T, B, -1)
    out += b
    return out


def linear_backward(
    dout: np.ndarray, x: np.ndarray, Wx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """dout: (T, B, G); x: (T, B, D). Returns dx (T, B, D) and dWx (D, G)."""
    T, B, G = dout.shape
    d2 = dout.reshape(T * B, G)
    return (d2 @ Wx.T).reshape(T, B, -1), x.reshape(T * B, -1).T @ d2


# ---------------------------------------------------------------------------------------
# LSTM:  f = s(a_f)  i = s(a_i)  o = s(a_o)  g = tanh(a_c),  a = [h, x] W + b
#        c = f * c_prev + i * g,  h = o * tanh(c)
# Columns are packed [f | i | o | c], so the three sigmoid gates are one contiguous block.
#
# The time loop runs feature-major: each step's state is (H, B) and its gates (4H, B), so
# the step's product is W[:H].T (4H, H) @ h (H, B) forward and W[:H] (H, 4H) @ da (4H, B)
# backward. OpenBLAS is much faster in that orientation for the few rows (B) of a step
# (2 cores of an AMD EPYC, float32: B 32, H 512: 409 us against 635 for h (B, H) @ W[:H]
# forward, 413 against 490 backward; H 400, B 20: 175 / 192 and 208 / 239; B 20, H 200 on
# one thread: 83 / 78 and 86 / 82). The window's arrays go in and out batch-major (T, B, .);
# the cache's arrays are batch-major views of the feature-major ones.


class LSTMCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H)  h[0] is the initial state
    c: np.ndarray  # (T+1, B, H)
    act: np.ndarray  # (T, B, 4H)   gate activations f, i, o, g
    tanh_c: np.ndarray  # (T, B, H)
    Wh: np.ndarray  # (H, 4H)


def swap_last(a: np.ndarray) -> np.ndarray:
    """(T, X, Y) -> (T, Y, X) as a C-contiguous copy: between batch- and feature-major."""
    T, X, Y = a.shape
    out = np.empty((T, Y, X), a.dtype)
    if (X * a.itemsize) % CACHE_SET_STRIDE and (Y * a.itemsize) % CACHE_SET_STRIDE:
        np.copyto(out, a.transpose(0, 2, 1))
        return out
    pad = 64 // a.itemsize
    src, dst = np.empty((X, Y + pad), a.dtype), np.empty((Y, X + pad), a.dtype)
    for t in range(T):  # each step's block through padded rows, both ways
        src[:, :Y] = a[t]
        dst[:, :X] = src[:, :Y].T
        out[t] = dst[:, :X]
    return out


def lstm_forward(xproj: np.ndarray, state0: tuple[np.ndarray, np.ndarray], Wh: np.ndarray):
    """Run an LSTM layer over a window.

    xproj: (T, B, 4H) input projection x W[H:] + b; state0: (h0, c0), each (B, H);
    Wh: (H, 4H) = W[:H].
    Returns hs (T, B, H), the final state (hT, cT), each (B, H), and the cache.
    """
    T, B, G = xproj.shape
    H = G // 4
    # the copy pays for itself over a window's steps of several streams, not in a single step
    # (sampling) nor for one stream, whose matrix-vector product is as fast through the view
    # (Intel Xeon, 2 cores: 650 x 2,600, B 1: view 115 us, copy 162 us a step, the copy 1.1 ms;
    # B 20: 877 against 563 us)
    WhT = transposed(Wh) if T > 1 and B > 1 else Wh.T  # (4H, H)
    h = np.empty((T + 1, H, B), xproj.dtype)
    act = swap_last(xproj)  # (T, 4H, B): each step's product is added in place
    return _lstm_steps(WhT, h, act, state0, Wh, add=True)


# Layer 0 can take its tokens inside each step's product, [Wh; Wx; b].T (4H, H + V + 1) @
# [h; one-hot; 1] (H + V + 1, B): no (T, B, 4H) gather of token rows and no transposed copy
# of it, for a product larger by (V + 1) / H. Worth it where V is small beside H: the char
# model (V 50, H 512), a window's forward pass 43 -> 35 ms (2 cores of an AMD EPYC, quiet).
TOKENS_IN_STEP_MAX = 1 / 8  # (V + 1) / H at most
# ... and its inner dimension padded with zeros to a multiple of this: OpenBLAS 0.3.31 sums
# (2,048, K) x (K, 32) the same way on one thread and on two where K is a multiple of 32
# (512, 544, 576, ...; not 563: Intel Xeon, SkylakeX kernels), so the char model's training
# step keeps its bits on one thread, where a busy machine runs it (Threads.training_step).
# 576 for 563 columns: 2% more multiply-adds.
TOKENS_IN_STEP_ALIGN = 32


def lstm_forward_tokens(
    tokens: np.ndarray,
    Wx: np.ndarray,
    b: np.ndarray,
    state0: tuple[np.ndarray, np.ndarray],
    Wh: np.ndarray,
):
    """`lstm_forward(embed_forward(tokens, Wx, b), state0, Wh)` with the token rows taken
    inside each step's product (the same results to float rounding, the same cache).

    tokens: (T, B) int ids; Wx: (V, 4H) the x rows of W; b: (4H,); state0: (h0, c0), each
    (B, H); Wh: (H, 4H).
    """
    T, B = tokens.shape
    (H, G), V, dt = Wh.shape, Wx.shape[0], Wh.dtype
    K = -(-(H + V + 1) // TOKENS_IN_STEP_ALIGN) * TOKENS_IN_STEP_ALIGN
    WT = np.zeros((G, K), dt)  # [Wh; Wx; b; 0].T
    transposed(Wh, out=WT[:, :H])
    WT[:, H : H + V] = Wx.T
    WT[:, H + V] = b
    hx = np.zeros((T + 1, K, B), dt)  # step t's [h_t; one-hot of tokens[t]; 1; 0]
    hx[:, H + V] = 1
    hx[np.arange(T)[:, None], H + tokens, np.arange(B)] = 1
    return _lstm_steps(WT, hx, np.empty((T, G, B), dt), state0, Wh, add=False)


def _lstm_steps(WT, hx, act, state0, Wh, add: bool):
    """The time loop of both: step t's pre-activations are WT @ hx[t], added to act[t] (the
    input projection already there) or written into it; hx[t, :H] is h_t, (H, B)."""
    T, G, B = act.shape
    H, dt = G // 4, act.dtype
    h = hx[:, :H]  # (T+1, H, B)
    c = np.empty((T + 1, H, B), dt)
    tanh_c = np.empty((T, H, B), dt)
    hW, ig = np.empty((G, B), dt), np.empty((H, B), dt)
    h[0], c[0] = state0[0].T, state0[1].T
    for t in range(T):
        a = act[t]
        if add:
            np.matmul(WT, hx[t], out=hW)
            a += hW
        else:
            np.matmul(WT, hx[t], out=a)
        sigmoid_(a[: 3 * H])
        np.tanh(a[3 * H :], out=a[3 * H :])
        f, i, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        np.multiply(f, c[t], out=c[t + 1])
        np.multiply(i, g, out=ig)
        c[t + 1] += ig
        np.tanh(c[t + 1], out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=h[t + 1])
    cache = LSTMCache(*(x.transpose(0, 2, 1) for x in (h, c, act, tanh_c)), Wh)
    return swap_last(h[1:]), (h[T].T.copy(), c[T].T.copy()), cache


def lstm_backward(
    dhs: np.ndarray, dstate: tuple[np.ndarray | None, np.ndarray | None], cache: LSTMCache
):
    """Backward through the window.

    dhs: (T, B, H) loss gradient on each step's output h; dstate: (dhT, dcT), gradients
    on the final state (None for zero).
    Returns dxproj (T, B, 4H), dWh (H, 4H) and (dh0, dc0), each (B, H).
    """
    h, c, act, tanh_c = (x.transpose(0, 2, 1) for x in cache[:4])  # feature-major
    Wh = cache.Wh
    T, G, B = act.shape
    H = G // 4
    dt = act.dtype

    def state(d):  # a final state's gradient (B, H) or None -> (H, B), to be updated
        return np.zeros((H, B), dt) if d is None else d.T.astype(dt, order="C")

    da = np.empty_like(act)  # (T, 4H, B)
    dh, tmp, dsig = np.empty((H, B), dt), np.empty((H, B), dt), np.empty((3 * H, B), dt)
    dh_next, dc = state(dstate[0]), state(dstate[1])
    for t in reversed(range(T)):
        a, d = act[t], da[t]
        f, i, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        df, di, do, dg = d[:H], d[H : 2 * H], d[2 * H : 3 * H], d[3 * H :]
        np.add(dhs[t].T, dh_next, out=dh)
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
        np.subtract(1, a[: 3 * H], out=dsig)
        dsig *= a[: 3 * H]
        d[: 3 * H] *= dsig
        np.multiply(g, g, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dg *= tmp
        np.matmul(Wh, d, out=dh_next)
    dxproj = swap_last(da)  # (T, B, 4H)
    dWh = swap_last(h[:-1]).reshape(T * B, H).T @ dxproj.reshape(T * B, G)
    return dxproj, dWh, (dh_next.T.copy(), dc.T.copy())


# ---------------------------------------------------------------------------------------
# Vanilla RNN:  h = tanh([h, x] Wh + bh)


class RNNCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H)  h[0] is the initial state
    Wh: np.ndarray  # (H, H)


def rnn_forward(xproj: np.ndarray, state0: tuple[np.ndarray], Wh: np.ndarray):
    """xproj: (T, B, H); state0: (h0,), (B, H); Wh: (H, H). Returns hs (T, B, H), (hT,), cache."""
    T, B, H = xproj.shape
    h = np.empty((T + 1, B, H), xproj.dtype)
    h[0] = state0[0]
    for t in range(T):
        np.matmul(h[t], Wh, out=h[t + 1])
        h[t + 1] += xproj[t]
        np.tanh(h[t + 1], out=h[t + 1])
    return h[1:], (h[T],), RNNCache(h, Wh)


def rnn_backward(dhs: np.ndarray, dstate: tuple[np.ndarray | None], cache: RNNCache):
    """dhs: (T, B, H); dstate: (dhT,). Returns dxproj (T, B, H), dWh (H, H), (dh0,)."""
    h, Wh = cache
    T, B, H = dhs.shape
    da = np.empty((T, B, H), h.dtype)
    dh_next = (
        np.zeros((B, H), h.dtype) if dstate[0] is None else dstate[0].astype(h.dtype, copy=True)
    )
    tmp = np.empty((B, H), h.dtype)
    WhT = transposed(Wh)  # (H, H)
    for t in reversed(range(T)):
        d = da[t]
        np.add(dhs[t], dh_next, out=d)
        np.multiply(h[t + 1], h[t + 1], out=tmp)
        np.subtract(1, tmp, out=tmp)
        d *= tmp  # through tanh
        np.matmul(d, WhT, out=dh_next)
    dWh = h[:-1].reshape(T * B, H).T @ da.reshape(T * B, H)
    return da, dWh, (dh_next,)


# ---------------------------------------------------------------------------------------
# GRU (Cho et al. 2014, reset before the matmul), columns [z | r | n]:
#     z = s([h, x] Wz + bz)   r = s([h, x] Wr + br)   n = tanh([r * h, x] Wn + bn)
#     h = (1 - z) * n + z * h_prev
# n's h part acts on r * h, so each step does two GEMMs: h @ Wh[:, :2H], then (r h) @ Wh[:, 2H:].


class GRUCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H)
    act: np.ndarray  # (T, B, 3H)  z, r, n
    rh: np.ndarray  # (T, B, H)   r * h_prev
    Wh: np.ndarray  # (H, 3H)


def gru_forward(xproj: np.ndarray, state0: tuple[np.ndarray], Wh: np.ndarray):
    """xproj: (T, B, 3H); state0: (h0,), (B, H); Wh: (H, 3H). Returns hs (T, B, H), (hT,), cache."""
    T, B, G = xproj.shape
    H = G // 3
    h = np.empty((T + 1, B, H), xproj.dtype)
    act = np.empty_like(xproj)
    rh = np.empty((T, B, H), xproj.dtype)
    h[0] = state0[0]
    for t in range(T):
        a = act[t]
        np.matmul(h[t], Wh[:, : 2 * H], out=a[:, : 2 * H])
        a[:, : 2 * H] += xproj[t, :, : 2 * H]
        sigmoid_(a[:, : 2 * H])
        z, r, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        np.multiply(r, h[t], out=rh[t])
        np.matmul(rh[t], Wh[:, 2 * H :], out=n)
        n += xproj[t, :, 2 * H :]
        np.tanh(n, out=n)
        # h = n + z * (h_prev - n)
        np.subtract(h[t], n, out=h[t + 1])
        h[t + 1] *= z
        h[t + 1] += n
    return h[1:], (h[T],), GRUCache(h, act, rh, Wh)


def gru_backward(dhs: np.ndarray, dstate: tuple[np.ndarray | None], cache: GRUCache):
    """dhs: (T, B, H); dstate: (dhT,). Returns dxproj (T, B, 3H), dWh (H, 3H), (dh0,)."""
    h, act, rh, Wh = cache
    T, B, G = act.shape
    H = G // 3
    dt = act.dtype
    da = np.empty_like(act)
    dh = np.empty((B, H), dt)
    drh = np.empty((B, H), dt)
    dh_next = np.zeros((B, H), dt) if dstate[0] is None else dstate[0].astype(dt, copy=True)
    tmp, dsig = np.empty((B, H), dt), np.empty((B, 2 * H), dt)
    WhT = transposed(Wh)  # (3H, H)
    for t in reversed(range(T)):
        a, d = act[t], da[t]
        z, r, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        dz, dr, dn = d[:, :H], d[:, H : 2 * H], d[:, 2 * H :]
        np.add(dhs[t], dh_next, out=dh)
        np.subtract(h[t], n, out=dz)
        dz *= dh  # dL/dz
        np.subtract(1, z, out=dn)
        dn *= dh  # dL/dn
        np.multiply(n, n, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dn *= tmp  # through tanh
        np.multiply(dh, z, out=dh_next)  # direct path z * h_prev
        np.matmul(dn, WhT[2 * H :], out=drh)
        np.multiply(drh, h[t], out=dr)
        drh *= r
        dh_next += drh
        np.subtract(1, a[:, : 2 * H], out=dsig)
        dsig *= a[:, : 2 * H]
        d[:, : 2 * H] *= dsig  # through the sigmoids
        np.matmul(d[:, : 2 * H], WhT[: 2 * H], out=tmp)
        dh_next += tmp
    dWh = np.empty_like(Wh)
    dWh[:, : 2 * H] = h[:-1].reshape(T * B, H).T @ da[:, :, : 2 * H].reshape(T * B, 2 * H)
    dWh[:, 2 * H :] = rh.reshape(T * B, H).T @ da[:, :, 2 * H :].reshape(T * B, H)
    return da, dWh, (dh_next,)


# ---------------------------------------------------------------------------------------
# JANET, the forget-gate-only LSTM (van der Westhuizen & Lasenby 2018), columns [f | c]:
#     s = [h, x] Wf + bf    g = tanh([h, x] Wc + bc)
#     c = s(s) * c_prev + (1 - s(s - beta)) * g,   h = c

JANET_BETA = 1.0


class JANETCache(NamedTuple):
    h: np.ndarray  # (T+1, B, H)  h = c
    f: np.ndarray  # (T, B, H)    s(s)
    f2: np.ndarray  # (T, B, H)    s(s - beta)
    g: np.ndarray  # (T, B, H)
    Wh: np.ndarray  # (H, 2H)


def janet_forward(
    xproj: np.ndarray, state0: tuple[np.ndarray], Wh: np.ndarray, beta: float = JANET_BETA
):
    """xproj: (T, B, 2H); state0: (h0,), (B, H); Wh: (H, 2H). Returns hs (T, B, H), (hT,), cache."""
    T, B, G = xproj.shape
    H = G // 2
    dt = xproj.dtype
    h = np.empty((T + 1, B, H), dt)
    a = np.empty((T, B, G), dt)
    f2 = np.empty((T, B, H), dt)
    h[0] = state0[0]
    tmp = np.empty((B, H), dt)
    for t in range(T):
        np.matmul(h[t], Wh, out=a[t])
        a[t] += xproj[t]
        np.subtract(a[t, :, :H], dt.type(beta), out=f2[t])
        sigmoid_(f2[t])
        sigmoid_(a[t, :, :H])
        np.tanh(a[t, :, H:], out=a[t, :, H:])
        f, g = a[t, :, :H], a[t, :, H:]
        # c = f * c_prev + (1 - f2) * g = f * c_prev + g - f2 * g
        np.multiply(f, h[t], out=h[t + 1])
        h[t + 1] += g
        np.multiply(f2[t], g, out=tmp)
        h[t + 1] -= tmp
    return h[1:], (h[T],), JANETCache(h, a[:, :, :H], f2, a[:, :, H:], Wh)


def janet_backward(dhs: np.ndarray, dstate: tuple[np.ndarray | None], cache: JANETCache):
    """dhs: (T, B, H); dstate: (dhT,). Returns dxproj (T, B, 2H), dWh (H, 2H), (dh0,)."""
    h, f, f2, g, Wh = cache
    T, B, H = dhs.shape
    dt = h.dtype
    da = np.empty((T, B, 2 * H), dt)
    dc = np.empty((B, H), dt)
    dc_next = np.zeros((B, H), dt) if dstate[0] is None else dstate[0].astype(dt, copy=True)
    tmp, tmp2 = np.empty((B, H), dt), np.empty((B, H), dt)
    WhT = transposed(Wh)  # (2H, H)
    for t in reversed(range(T)):
        ds, dg = da[t, :, :H], da[t, :, H:]
        np.add(dhs[t], dc_next, out=dc)
        # ds = dc * (c_prev * f (1 - f) - g * f2 (1 - f2))
        np.subtract(1, f[t], out=tmp)
        tmp *= f[t]
        np.multiply(h[t], tmp, out=ds)
        np.subtract(1, f2[t], out=tmp)
        tmp *= f2[t]
        tmp *= g[t]
        ds -= tmp
        ds *= dc
        # dg = dc * (1 - f2) * (1 - g^2)
        np.subtract(1, f2[t], out=dg)
        dg *= dc
        np.multiply(g[t], g[t], out=tmp)
        np.subtract(1, tmp, out=tmp)
        dg *= tmp
        np.multiply(dc, f[t], out=dc_next)
        np.matmul(da[t], WhT, out=tmp2)
        dc_next += tmp2
    dWh = h[:-1].reshape(T * B, H).T @ da.reshape(T * B, 2 * H)
    return da, dWh, (dc_next,)


class Cell(NamedTuple):
    """What the model needs to know about a cell type."""

    gates: tuple[str, ...]  # names of the column blocks of W and b, in order
    n_state: int  # arrays in the recurrent state (h, c for the LSTM)
    forward: object
    backward: object
    forward_tokens: object = None  # forward from token ids, the tokens inside each step


CELL_TYPES = {
    "lstm": Cell(("f", "i", "o", "c"), 2, lstm_forward, lstm_backward, lstm_forward_tokens),
    "gru": Cell(("z", "r", "n"), 1, gru_forward, gru_backward),
    "rnn": Cell(("h",), 1, rnn_forward, rnn_backward),
    "janet": Cell(("f", "c"), 1, janet_forward, janet_backward),
}


# ---------------------------------------------------------------------------------------
# A recurrent layer over dense, batch-major input: the API for sequence regression,
# conditioning on features, or stacking under other read-outs (see examples/).


class LayerCache(NamedTuple):
    x: np.ndarray  # (T, B, D) time-major view of the input
    W: np.ndarray  # (H + D, G)
    cell_cache: tuple
    cell: Cell


def layer_init(
    cell: str, D: int, H: int, rng: np.random.Generator, scale: float = 0.1, dtype="float64"
) -> tuple[np.ndarray, np.ndarray]:
    """Weights W (H + D, G) uniform in +-scale, rows [h; x], and zero biases b (G,)."""
    G = len(CELL_TYPES[cell].gates) * H
    return rng.uniform(-scale, scale, (H + D, G)).astype(dtype), np.zeros(G, dtype)


def layer_forward(
    cell: str, x: np.ndarray, state0: tuple[np.ndarray, ...], W: np.ndarray, b: np.ndarray
):
    """Run a recurrent layer over a batch of sequences.

    x: (B, T, D) float input; state0: the cell's state arrays, each (B, H) ((h, c) for the
    LSTM, (h,) otherwise); W: (H + D, G), rows [h; x]; b: (G,).
    Returns hs (B, T, H), the final state and the cache.
    """
    H = W.shape[0] - x.shape[2]
    c = CELL_TYPES[cell]
    xt = x.transpose(1, 0, 2)  # (T, B, D)
    hs, stateT, cache = c.forward(linear_forward(xt, W[H:], b), state0, W[:H])
    return hs.transpose(1, 0, 2), stateT, LayerCache(xt, W, cache, c)


def layer_backward(dhs: np.ndarray, dstate: tuple, cache: LayerCache):
    """dhs: (B, T, H) gradient on the outputs; dstate: gradients on the final state (None for
    zero). Returns dx (B, T, D), dW (H + D, G), db (G,) and dstate0."""
    x, W, cell_cache, c = cache
    H = W.shape[0] - x.shape[2]
    dxproj, dWh, dstate0 = c.backward(
        np.ascontiguousarray(dhs.transpose(1, 0, 2)), dstate, cell_cache
    )
    dx, dWx = linear_backward(dxproj, x, W[H:])
    return dx.transpose(1, 0, 2), np.concatenate([dWh, dWx]), dxproj.sum(axis=(0, 1)), dstate0
