"""Activation regularisation of the top layer's output (Merity et al. 2017, AR and TAR) as a
forward/backward pair: penalties the model adds to its training loss.

Dimensions: T steps, B streams, H hidden units.
- AR, alpha * mean((m * h)^2): the output the softmax sees, after its dropout mask m; keeps
  the activations small.
- TAR, beta * mean((h_t - h_{t-1})^2): the output before dropout; penalises a hidden state
  that changes fast from step to step (within the window: its first step has no
  predecessor here).
Both are means over entries, added to the mean NLL per target token, as in Merity et al.
(their alpha 2, beta 1). Evaluation never sees them: they change gradients, not the model.
"""

from __future__ import annotations

import numpy as np


def ar_tar_forward(hs: np.ndarray, mask: np.ndarray | None, alpha: float, beta: float):
    """hs: (T, B, H) the top layer's output; mask: its dropout mask (T or 1, B, H) or None.
    Returns the penalty alpha * AR + beta * TAR (a float, 0 when both are off) and the cache."""
    top = hs if mask is None or not alpha else hs * mask
    diff = hs[1:] - hs[:-1] if beta and len(hs) > 1 else None  # (T - 1, B, H)
    ar = alpha * float(np.vdot(top, top)) / top.size if alpha else 0.0
    tar = beta * float(np.vdot(diff, diff)) / diff.size if diff is not None else 0.0
    return ar + tar, (top, mask, diff, alpha, beta)


def ar_tar_backward(dpenalty: float, cache, dhs: np.ndarray) -> None:
    """Add d(dpenalty * penalty)/d(hs) into dhs (T, B, H), in place (nothing when off);
    dpenalty is the scale the caller gives its loss."""
    top, mask, diff, alpha, beta = cache
    if alpha:
        dtop = top * dhs.dtype.type(2 * alpha * dpenalty / top.size)
        dhs += dtop if mask is None else dtop * mask
    if diff is not None:
        d = diff * dhs.dtype.type(2 * beta * dpenalty / diff.size)
        dhs[1:] += d
        dhs[:-1] -= d
