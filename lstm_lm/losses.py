"""Softmax cross-entropy over the vocabulary, computed in place on the logits buffer.

N target positions, V vocabulary. Log-softmax is shifted by each row's max, so large
logits neither overflow nor warn.
"""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy_(logits: np.ndarray, targets: np.ndarray, dscale: float | None):
    """Negative log-likelihood of `targets` under softmax(logits).

    logits: (N, V), overwritten; targets: (N,) int ids.
    Returns nll: (N,) float64 per position. If `dscale` is given, logits is left holding
    dscale * d(sum of nll)/d(logits) = dscale * (softmax - onehot), the gradient the
    caller wants (dscale = 1/N for the mean); otherwise it holds garbage.
    """
    rows = np.arange(len(targets))
    logits -= logits.max(axis=1, keepdims=True)
    target_logit = logits[rows, targets].astype(np.float64)
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    nll = np.log(total[:, 0].astype(np.float64)) - target_logit
    if dscale is not None:
        logits *= (dscale / total).astype(logits.dtype)
        logits[rows, targets] -= logits.dtype.type(dscale)
    return nll
