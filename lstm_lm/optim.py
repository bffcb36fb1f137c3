"""Optimisers over parameter dicts, and clipping by global norm.

Params, grads and optimiser memory are dicts with the same keys, so no optimiser needs to
know about layers. Updates are in place on the parameters; `step` only reads the gradients
(its intermediate results go to a scratch buffer of its own), since the model keeps the
gradient buffer between windows and relies on rows it did not touch staying zero.
`rows` says, for some keys, which rows of the gradient may be non-zero (a window touches a
few hundred of the 10,000 token rows): SGD, Adagrad and clipping then work on those rows
only. Adam's moments decay on every row, so Adam stays dense.
"""

from __future__ import annotations

import contextlib

import numpy as np

Rows = dict[str, np.ndarray]


def _live(grads: dict[str, np.ndarray], rows: Rows | None):
    """(key, the part of the gradient that may be non-zero, its row index or None)."""
    for k, g in grads.items():
        r = (rows or {}).get(k)
        yield k, (g if r is None else g[r]), r


def clip_global_norm_(
    grads: dict[str, np.ndarray], max_norm: float, rows: Rows | None = None
) -> float:
    """Scale all gradients together so their joint L2 norm is at most max_norm (0: never).
    Returns the norm before clipping (inf or nan if a gradient is not finite)."""
    live = list(_live(grads, rows))
    norm = float(np.sqrt(sum(float(np.vdot(g, g)) for _, g, _ in live)))
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / norm
        for k, g, r in live:
            if r is None:
                g *= g.dtype.type(scale)
            else:
                grads[k][r] = g * g.dtype.type(scale)
    return norm


class SGD:
    """p -= lr * g"""

    def __init__(self, params: dict[str, np.ndarray]):
        self.t = 0
        largest = max(params.values(), key=lambda p: p.size)
        self._scratch = np.empty(largest.size, largest.dtype)

    def scratch(self, p: np.ndarray) -> np.ndarray:
        """A buffer shaped like p for intermediate results: the gradients stay as they are."""
        return self._scratch[: p.size].reshape(p.shape)

    def step(self, params, grads, lr: float, rows: Rows | None = None) -> None:
        self.t += 1
        for k, g, r in _live(grads, rows):
            if r is None:
                self._descend(params[k], g, lr)
            else:
                params[k][r] -= g * g.dtype.type(lr)

    def _descend(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        """p -= lr * g, whole."""
        p -= np.multiply(g, p.dtype.type(lr), out=self.scratch(p))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.t = int(state["t"])

    def averaged(self):
        """Context in which the parameters are what evaluation and checkpoints use (ASGD: the
        average of the iterates; here the parameters themselves)."""
        return contextlib.nullcontext()


class ASGD(SGD):
    """SGD that, from `start_averaging()` on, also keeps the mean of its iterates (Polyak &
    Juditsky 1992), which evaluation and checkpoints use; when to start is the trainer's
    (Merity et al. 2017's non-monotone trigger). Within `averaged()` the parameters hold the
    average and `state_dict` the iterate, so a checkpoint's parameters are the model to use
    and `load_state_dict` (into those parameters) restores both.

    A row that a step leaves as it was adds the same iterate to the mean again, so the rows
    of a sparsely updated key are averaged lazily: `since[k][i]` is how many iterates row i
    of `avg[k]` holds, and the rest are all its present value; a row is brought up to date
    just before it changes (a window moves a few hundred of the 10,000 token rows; averaging
    all of them every step would cost a fifth of the step)."""

    def __init__(self, params: dict[str, np.ndarray]):
        super().__init__(params)
        self.params = params
        self.avg: dict[str, np.ndarray] | None = None
        self.since: dict[str, np.ndarray] = {}  # (rows,) of the keys averaged lazily
        self.n = 0  # iterates in the average
        self._iterate: dict[str, np.ndarray] | None = None  # within averaged()

    def start_averaging(self) -> None:
        self.avg, self.since, self.n = {k: p.copy() for k, p in self.params.items()}, {}, 1

    def step(self, params, grads, lr: float, rows: Rows | None = None) -> None:
        if self.avg is None:
            return super().step(params, grads, lr, rows)
        self.t += 1
        rows, n = rows or {}, self.n + 1  # n: iterates in the mean after this step
        for k, p in params.items():
            g, a, r, one = grads[k], self.avg[k], rows.get(k), p.dtype.type
            if r is None and k not in self.since:  # the step, then the mean
                self._descend(p, g, lr)
                u = np.subtract(p, a, out=self.scratch(p))
                u *= one(1 / n)
                a += u
                continue
            r = slice(None) if r is None else r
            P, A = p[r], a[r]  # the rows about to change, gathered once
            if k in self.since:  # their mean brought up to the present iterate
                A += (P - A) * self._missed(k, r)
            else:  # until now averaged whole: every row is up to date
                self.since[k] = np.full(len(p), self.n, np.int64)
            P -= g[r] * one(lr)
            A += (P - A) * one(1 / n)
            p[r], a[r] = P, A
            self.since[k][r] = n
        self.n = n

    def _missed(self, k: str, r=slice(None)) -> np.ndarray:
        """(rows, 1, ...): the share of the n iterates that rows r of avg[k] have not taken
        in yet, all equal to the row as it is."""
        p = self.params[k]
        w = ((self.n - self.since[k][r]) / self.n).astype(p.dtype)
        return w.reshape(-1, *(1,) * (p.ndim - 1))

    def _mean(self, k: str) -> np.ndarray:
        """The average of key k's iterates so far (avg[k] with its lazy rows completed)."""
        a, p = self.avg[k], self.params[k]
        return a if k not in self.since else a + (p - a) * self._missed(k)

    @contextlib.contextmanager
    def averaged(self):
        if self.avg is None:
            yield
            return
        self._iterate = {k: p.copy() for k, p in self.params.items()}
        for k, p in self.params.items():
            p[...] = self._mean(k)
        try:
            yield
        finally:
            for k, p in self.params.items():
                p[...] = self._iterate[k]
            self._iterate = None

    def state_dict(self):
        """The step and iterate counts; once averaging, the iterate (the parameters are the
        average, within `averaged()`) and, of the keys averaged lazily, the lazy average and
        its rows' counts."""
        state = {"t": np.array(self.t), "n": np.array(self.n)}
        if self.avg is not None:
            iterate = self._iterate if self._iterate is not None else self.params
            state.update({f"iterate.{k}": a for k, a in iterate.items()})
            state.update({f"avg.{k}": self.avg[k] for k in self.since})
            state.update({f"since.{k}": s for k, s in self.since.items()})
        return state

    def load_state_dict(self, state):
        self.t, self.n = int(state["t"]), int(state.get("n", 0))
        if self.n:  # the parameters hold the average, the state the iterate
            self.avg = {k: p.copy() for k, p in self.params.items()}
            self.since = {k[6:]: s.astype(np.int64) for k, s in state.items()
                          if k.startswith("since.")}  # fmt: skip
            for k in self.since:
                self.avg[k][...] = state[f"avg.{k}"]
            for k, p in self.params.items():
                p[...] = state[f"iterate.{k}"]


class Adam(SGD):
    """Kingma & Ba 2015 with bias correction: m, v are running moments of g and g^2."""

    def __init__(self, params, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params, grads, lr: float, rows: Rows | None = None) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for k, p in params.items():
            g, m, v, u = grads[k], self.m[k], self.v[k], self.scratch(p)
            one = p.dtype.type
            m *= one(b1)
            m += np.multiply(g, one(1 - b1), out=u)
            v *= one(b2)
            np.multiply(g, g, out=u)
            v += np.multiply(u, one(1 - b2), out=u)
            np.sqrt(v, out=u)
            u += one(self.eps)
            np.divide(m, u, out=u)
            u *= one(step_size)
            p -= u

    def state_dict(self):
        return {
            "t": np.array(self.t),
            **{f"m.{k}": a for k, a in self.m.items()},
            **{f"v.{k}": a for k, a in self.v.items()},
        }

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.m:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]


class Adagrad(SGD):
    """Duchi et al. 2011: p -= lr * g / (sqrt(sum of g^2) + eps)"""

    def __init__(self, params, eps: float = 1e-8):
        super().__init__(params)
        self.eps = eps
        self.G = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params, grads, lr: float, rows: Rows | None = None) -> None:
        self.t += 1
        for k, g, r in _live(grads, rows):
            p, G = params[k], self.G[k]
            one = p.dtype.type
            sel = slice(None) if r is None else r
            G[sel] += g * g
            p[sel] -= one(lr) * g / (np.sqrt(G[sel]) + one(self.eps))

    def state_dict(self):
        return {"t": np.array(self.t), **{f"G.{k}": a for k, a in self.G.items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for k in self.G:
            self.G[k][...] = state[f"G.{k}"]


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adagrad": Adagrad}
