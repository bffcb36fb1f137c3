"""The stacked recurrent language model: parameters, state, loss and gradients, one step.

Dimensions: B streams, T steps, V vocabulary, H hidden units, L layers, G = gates * H.

Parameters are stored packed, one buffer per layer whose column blocks are the gates:
    l{k}.W  (H + D_k, G)  rows [h; x], D_0 = V (one-hot token), D_k = H above
    l{k}.b  (G,)
and the output layer's, chosen by `config.softmax` (OUTPUT_LAYERS): the full softmax's
Wy (H, V), by (V,) (`softmax`), or the adaptive softmax's head and tails (`adaptive`).
The contract names of the checkpoint (`l0.Wf`, `l0.Wi`, ..., `Wy`, `by`) are views of these
buffers (`named_arrays`). Dropout (Zaremba et al. 2014) sits on the non-recurrent
connections: the input of every layer above the first, and the input of the softmax. The
one-hot input has nothing to drop; its analogue, `input_dropout`, drops entries of the
token's row W[H + token] (what an embedding would feed the gates). The masks, their
variational and per-type variants and DropConnect on the recurrent weights are drawn and
applied by `dropout`; all are off by default, as are the activation penalties of
`activation_reg` (AR and TAR on the top layer's output).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lstm_lm import LMError, dropout
from lstm_lm.activation_reg import ar_tar_backward, ar_tar_forward
from lstm_lm.adaptive import AdaptiveSoftmax
from lstm_lm.cells import (
    CELL_TYPES,
    TOKENS_IN_STEP_MAX,
    embed_backward,
    embed_forward,
    linear_backward,
    linear_forward,
)
from lstm_lm.config import ModelConfig
from lstm_lm.dropout import Masks, weight_drop_backward, weight_drop_forward
from lstm_lm.parallel import Group
from lstm_lm.softmax import FullSoftmax
from lstm_lm.threads import Threads
from lstm_lm.tied import TiedSoftmax, embedding_backward, embedding_forward
from lstm_lm.timing import Phases

State = list[tuple[np.ndarray, ...]]  # per layer: (h, c) for the LSTM, (h,) for others; (B, H)

# The output layers by --softmax: each offers loss / nll / logits over the top layer's output.
OUTPUT_LAYERS = {"full": FullSoftmax, "adaptive": AdaptiveSoftmax}


def output_layer(config: ModelConfig):
    """The output layer's class: by --softmax, or with --tied the full softmax over E."""
    return TiedSoftmax if config.tied else OUTPUT_LAYERS[config.softmax]


class Result(NamedTuple):
    loss: float  # mean negative log-likelihood per target token (nats)
    penalty: float  # the activation penalties (AR + TAR) added to it for training; 0 when off
    grads: dict[str, np.ndarray]  # d(scale * (loss + penalty))/d(param), same keys as params
    state: State  # final state, detached
    dstate0: State  # d(scale * (loss + penalty))/d(initial state)
    rows: dict[str, np.ndarray]  # grads[k] is zero outside these rows (sparse token rows)
    token_rows: np.ndarray  # (U,) the window's token ids: rows H + token_rows of grads["l0.W"]
    nll: np.ndarray  # (T * B,) float64 NLL of each target, time-major
    top: np.ndarray  # (T, B, H) the top layer's output (before the softmax's dropout)


def named_views(config: ModelConfig, packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The contract names (`l0.Wf`, ..., `Wy`, `by`) as writable views into packed buffers
    (parameters, or gradients with the same keys)."""
    H, gates, out = config.hidden, CELL_TYPES[config.cell].gates, {}
    for k in range(config.layers):
        W, b = packed[f"l{k}.W"], packed[f"l{k}.b"]
        for j, g in enumerate(gates):
            out[f"l{k}.W{g}"] = W[:, j * H : (j + 1) * H]
            out[f"l{k}.b{g}"] = b[j * H : (j + 1) * H]
    out.update({k: packed[k] for k in output_layer(config).shapes(config)})
    return out


def memory_estimate(config: ModelConfig, batch_size: int, bptt: int, optimizer: str = "sgd",
                    dtype="float32", asgd: bool = False) -> int:  # fmt: skip
    """Bytes that training allocates, roughly: parameters, gradients and optimiser memory
    (Adam two arrays per parameter, Adagrad one, ASGD the average and the iterate while it is
    evaluated, and a scratch buffer of the largest), one window's activations of every layer
    and the output layer's buffers (the full softmax's (N, V) logits). Python integers, so an
    absurd size cannot overflow."""
    H, V, L = config.hidden, config.vocab_size, config.layers
    G = len(CELL_TYPES[config.cell].gates) * H
    N = batch_size * bptt
    output, buffers = output_layer(config).memory(config, N)
    params = sum((H + (config.input_width if k == 0 else H) + 1) * G for k in range(L)) + output
    largest = max((H + config.input_width) * G, H * V)
    copies = 2 + {"adam": 2, "adagrad": 1}.get(optimizer, 0) + 2 * asgd
    per_layer = N * (4 * G + 6 * H)  # xproj, gate activations, their gradients, masks; h, c, ...
    return np.dtype(dtype).itemsize * (copies * params + largest + L * per_layer + 2 * buffers)


class LanguageModel:
    """The recurrent layers and the output layer over packed parameters. `order`: the
    vocabulary ids by training frequency, which an adaptive softmax's clusters follow
    (adaptive.frequency_order; default: the ids' own order)."""

    def __init__(self, config: ModelConfig, params: dict[str, np.ndarray],
                 threads: Threads | None = None, order: np.ndarray | None = None):  # fmt: skip
        self.config = config
        self.cell = CELL_TYPES[config.cell]
        self.params = params
        self.dtype = params["l0.W"].dtype
        self.threads = threads or Threads()
        self.output = output_layer(config)(config, self.threads, order)
        self.phases = Phases(on=False)  # `lstm-lm bench --profile` turns it on
        self.grads, self.dense_grads = self._gradient_buffers()  # reused by every step
        self._token_rows = np.arange(0)  # token rows of grads["l0.W"] left non-zero last call

    def _gradient_buffers(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The gradients as views into one flat buffer, l0.W last, and the start of that
        buffer up to the end of l0.W's first H rows: every dense gradient in one contiguous
        array (what ranks sum in one message); the one-hot token rows of l0.W follow it
        (with --tied there are none: every gradient is dense)."""
        keys = [k for k in self.params if k != "l0.W"] + ["l0.W"]
        flat = np.zeros(sum(self.params[k].size for k in keys), self.dtype)
        grads, at = {}, 0
        for k in keys:
            p = self.params[k]
            grads[k] = flat[at : at + p.size].reshape(p.shape)
            at += p.size
        if not self.config.tied:
            at += grads["l0.W"][: self.config.hidden].size - self.params["l0.W"].size
        return {k: grads[k] for k in self.params}, flat[:at]

    def _tokens_in_step(self, tokens: np.ndarray, mask) -> bool:
        """Whether layer 0 takes its tokens inside each step's product (cells.
        lstm_forward_tokens): a cell that can, a vocabulary small beside the hidden size, a
        window (a single step, sampling, gathers one row), no dropout on the token rows."""
        c = self.config
        return (self.cell.forward_tokens is not None and mask is None and len(tokens) > 1
                and not c.tied
                and c.vocab_size + 1 <= TOKENS_IN_STEP_MAX * c.hidden)  # fmt: skip

    def _time_loop(self, B: int):
        H, G = self.config.hidden, len(self.cell.gates) * self.config.hidden
        return self.threads.time_loop(B * H * G, H * G * self.dtype.itemsize)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def init(cls, config: ModelConfig, rng: np.random.Generator, dtype="float32",
             order: np.ndarray | None = None) -> LanguageModel:  # fmt: skip
        """Weights uniform in +-init_scale, biases zero, the forget bias set."""
        dtype = np.dtype(dtype)
        H, G = config.hidden, config.gate_columns
        s = config.init_scale
        params = {}
        for k in range(config.layers):
            D = config.input_width if k == 0 else H
            params[f"l{k}.W"] = rng.uniform(-s, s, (H + D, G)).astype(dtype)
            params[f"l{k}.b"] = np.zeros(G, dtype)
        params.update(output_layer(config).init(config, rng, dtype))
        model = cls(config, params, order=order)
        if "f" in model.cell.gates:
            named = model.named_arrays()
            for k in range(config.layers):
                named[f"l{k}.bf"][...] = (
                    np.log(rng.uniform(1, config.chrono - 1, H))
                    if config.chrono
                    else config.forget_bias
                )
        return model

    def named_arrays(self) -> dict[str, np.ndarray]:
        """The contract names, as views into the packed buffers (writable)."""
        return named_views(self.config, self.params)

    def saved_arrays(self) -> dict[str, np.ndarray]:
        """What a checkpoint holds of the model: the parameters by contract name and the
        output layer's other arrays (an adaptive softmax's `order`)."""
        return {**self.named_arrays(), **self.output.arrays()}

    @classmethod
    def from_named(
        cls, config: ModelConfig, arrays: dict[str, np.ndarray], dtype=None
    ) -> LanguageModel:
        """Build from contract-named arrays (as in a checkpoint, `saved_arrays`), checking
        every shape."""
        cell, H = CELL_TYPES[config.cell], config.hidden
        output = output_layer(config)
        dtype = np.dtype(dtype or arrays.get(f"l0.W{cell.gates[0]}", np.zeros(0)).dtype)

        def get(name, shape):
            if name not in arrays:
                raise LMError(f"parameter {name} is missing")
            if arrays[name].shape != shape:
                raise LMError(f"parameter {name} has shape {arrays[name].shape}, expected {shape}")
            return arrays[name].astype(dtype)

        params = {}
        for k in range(config.layers):
            D = config.input_width if k == 0 else H
            params[f"l{k}.W"] = np.concatenate(
                [get(f"l{k}.W{g}", (H + D, H)) for g in cell.gates], axis=1
            )
            params[f"l{k}.b"] = np.concatenate([get(f"l{k}.b{g}", (H,)) for g in cell.gates])
        params.update({k: get(k, shape) for k, shape in output.shapes(config).items()})
        for name in output.extra_arrays:
            if name not in arrays:
                raise LMError(f"{name} of the {config.softmax} softmax is missing")
        return cls(config, params, order=arrays.get("order"))

    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def init_state(self, batch_size: int) -> State:
        z = lambda: np.zeros((batch_size, self.config.hidden), self.dtype)  # noqa: E731
        return [tuple(z() for _ in range(self.cell.n_state)) for _ in range(self.config.layers)]

    def draw_masks(self, T: int, B: int, rng: np.random.Generator) -> Masks:
        """The dropout masks of one (B, T) window (dropout.Masks)."""
        return dropout.drawn(self.config, T, B, rng, self.dtype)

    # --- forward / backward ------------------------------------------------------------
    def _forward(self, tokens: np.ndarray, state: State, masks: Masks):
        """tokens (T, B) -> the top layer's output (T, B, H) (before the softmax's dropout),
        final state, caches."""
        H, phase = self.config.hidden, self.phases
        caches, final, hs, embedded = [], [], None, None
        for k in range(self.config.layers):
            W, b = self.params[f"l{k}.W"], self.params[f"l{k}.b"]
            with phase("input projections"):
                Wh, dropped = weight_drop_forward(W[:H], masks.recurrent[k])
                if k == 0 and self.config.tied:
                    inp, embedded = embedding_forward(self.params["E"], tokens,
                                                      masks.token_rows(tokens))  # fmt: skip
                    xproj = linear_forward(inp, W[H:], b)
                elif k == 0:
                    inp, m = None, masks.token_rows(tokens)
                    in_step = self._tokens_in_step(tokens, m)
                    xproj = None if in_step else embed_forward(tokens, W[H:], b, m)
                else:
                    m = masks.layers[k - 1]
                    inp = hs if m is None else hs * m
                    xproj = linear_forward(inp, W[H:], b)
            with phase("time loop, forward"), self._time_loop(tokens.shape[1]):
                if xproj is None:
                    hs, stateT, cache = self.cell.forward_tokens(tokens, W[H:], b, state[k], Wh)
                else:
                    hs, stateT, cache = self.cell.forward(xproj, state[k], Wh)
            final.append(tuple(s.copy() for s in stateT))
            caches.append((inp, cache, dropped, embedded if k == 0 else None))
        return hs, final, caches

    def loss_and_grads(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: State,
        *,
        rng: np.random.Generator | None = None,
        masks=None,
        scale: float = 1.0,
    ) -> Result:
        """Forward and backward over one window.

        x, y: (B, T) input and target ids; state: initial state (carried, detached);
        masks: dropout masks (default: drawn from rng when dropout > 0).
        Gradients are of scale * (mean NLL per target token + the activation penalties); the
        trainer uses scale = T, the loss summed over time steps and averaged over the batch
        (Zaremba et al.).
        The returned grads dict is reused by the next call.
        """
        B, T = x.shape
        H, N, phase = self.config.hidden, B * T, self.phases
        if masks is None:
            drawn = dropout.any_drawn(self.config)
            if drawn and rng is None:
                raise ValueError("dropout needs an rng or explicit masks")
            with phase("dropout masks"):
                masks = self.draw_masks(T, B, rng) if drawn else Masks.none(self.config.layers)
        tokens = x.T  # (T, B)
        hs, final, caches = self._forward(tokens, state, masks)
        m = masks.layers[-1]
        top = hs if m is None else hs * m
        penalty, reg = ar_tar_forward(hs, m, self.config.ar, self.config.tar)

        g = self.grads
        nll, dtop = self.output.loss(self.params, g, top.reshape(N, H), y.T.ravel(), scale / N,
                                     phase)  # fmt: skip
        dhs = dtop.reshape(T, B, H)
        if m is not None:
            dhs *= m
        ar_tar_backward(scale, reg, dhs)

        dstate0 = [None] * self.config.layers
        for k in reversed(range(self.config.layers)):
            inp, cache, dropped, embedded = caches[k]
            W, dW = self.params[f"l{k}.W"], g[f"l{k}.W"]
            with phase("time loop, backward"), self._time_loop(B):
                dxproj, dWh, dstate0[k] = self.cell.backward(
                    dhs, (None,) * self.cell.n_state, cache
                )
            dW[:H] = weight_drop_backward(dWh, dropped)
            np.sum(dxproj, axis=(0, 1), out=g[f"l{k}.b"])
            if k == 0 and self.config.tied:
                with phase("token rows"):
                    de, dW[H:] = linear_backward(dxproj, inp, W[H:])
                    rows, drows = embedding_backward(de, embedded)
                    g["E"][rows] += drows  # the input side, after the output side's whole dE
            elif k == 0:
                with phase("token rows"):
                    m = masks.token_rows(tokens)
                    rows, drows = embed_backward(dxproj if m is None else dxproj * m, tokens)
                    dW[H + self._token_rows] = 0
                    dW[H + rows] = drows
                    self._token_rows = rows
            else:
                with phase("input projections"):
                    dinp, dW[H:] = linear_backward(dxproj, inp, W[H:])
                    m = masks.layers[k - 1]
                    dhs = dinp if m is None else dinp * m
        if self.config.tied:  # every gradient dense
            return Result(float(nll.mean()), penalty, g, final, dstate0, {}, rows[:0], nll, hs)
        touched = np.concatenate([np.arange(H), H + rows])
        return Result(float(nll.mean()), penalty, g, final, dstate0, {"l0.W": touched}, rows,
                      nll, hs)  # fmt: skip

    def sum_over(self, r: Result, group: Group) -> Result:
        """Window r's gradients summed over the ranks of `group`, each rank having computed
        its block of the batch with `scale` divided by the number of ranks: the dense ones in
        one message, the token rows of layer 0 as the union of the rows any rank touched
        (ids first, then those rows only). The loss becomes the whole batch's."""
        if group.size == 1:
            return r
        H = self.config.hidden
        group.sum_(self.dense_grads)
        loss, penalty = group.sum(r.loss, r.penalty)
        r = r._replace(loss=loss / group.size, penalty=penalty / group.size)
        if self.config.tied:  # no sparse rows
            return r
        rows = group.union(r.token_rows)
        dW = self.grads["l0.W"]
        drows = np.zeros((len(rows), dW.shape[1]), self.dtype)  # (U, G)
        drows[np.searchsorted(rows, r.token_rows)] = dW[H + r.token_rows]
        dW[H + rows] = group.sum_(drows)
        self._token_rows = rows
        touched = np.concatenate([np.arange(H), H + rows])
        return r._replace(rows={"l0.W": touched}, token_rows=rows)

    def rows_read(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The rows of sparsely updated parameters that a window x (B, T) reads: layer 0's
        recurrent rows and the token rows of its tokens (the keys of Result.rows)."""
        if self.config.tied:
            return {}
        H = self.config.hidden
        return {"l0.W": np.concatenate([np.arange(H), H + np.unique(x)])}

    def scale_token_grads_(self, r: Result, factor: float) -> None:
        """Multiply the gradient of the token rows of layer 0 that window `r` used by
        `factor`: a learning-rate multiplier for them under SGD."""
        if factor != 1.0:
            r.grads["l0.W"][self.config.hidden + r.token_rows] *= self.dtype.type(factor)

    def nll(self, x: np.ndarray, y: np.ndarray, state: State) -> tuple[float, State]:
        """Evaluation (no dropout, no gradients): summed NLL over the window's B*T targets
        (nats, float64) and the final state."""
        nll, final = self._nll(x, y, state)
        return float(nll.sum()), final

    def token_nll(
        self, x: np.ndarray, y: np.ndarray, state: State, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, State]:
        """Evaluation per target: NLL (B, T) float64 (nats) and the final state. With a mask
        (B, T) bool, only the targets it marks go through the output layer (the rest: 0)."""
        nll, final = self._nll(x, y, state, None if mask is None else mask.T.ravel())
        return nll.reshape(x.shape[1], x.shape[0]).T, final

    def token_nll_and_top(self, x: np.ndarray, y: np.ndarray, state: State):
        """Evaluation per target with the top layer's output (what a neural cache keeps):
        NLL (B, T) float64, top (B, T, H) and the final state."""
        with self.threads.evaluation():
            top, final, _ = self._forward(x.T, state, Masks.none(self.config.layers))
            T, B, H = top.shape
            nll = self.output.nll(self.params, top.reshape(T * B, H), y.T.ravel())
            return nll.reshape(T, B).T, top.transpose(1, 0, 2), final

    def _nll(self, x, y, state, keep=None) -> tuple[np.ndarray, State]:
        """NLL of each target, time-major (T * B,), and the final state; where `keep` (T * B,)
        is given, of those targets only (0 elsewhere)."""
        with self.threads.evaluation():
            return self._nll_window(x, y, state, keep)

    def _nll_window(self, x, y, state, keep) -> tuple[np.ndarray, State]:
        top, final, _ = self._forward(x.T, state, Masks.none(self.config.layers))
        B, T = x.shape
        top, targets = top.reshape(B * T, -1), y.T.ravel()
        if keep is None:
            return self.output.nll(self.params, top, targets), final
        nll = np.zeros(B * T)
        nll[keep] = self.output.nll(self.params, top[keep], targets[keep])
        return nll, final

    def inspect(self, x: np.ndarray, state: State) -> tuple[np.ndarray, list, State]:
        """Evaluation that keeps what the cells computed (for lstm-lm viz): x (B, T) ->
        logits (T, B, V) float64 (the distribution is their softmax), each layer's cell cache
        (cells.LSTMCache, ...: its gate activations and states, time-major) and the final
        state."""
        with self.threads.evaluation():
            top, final, caches = self._forward(x.T, state, Masks.none(self.config.layers))
            T, B, H = top.shape
            logits = self.output.logits(self.params, top.reshape(T * B, H))
            return logits.reshape(T, B, -1), [cache for _, cache, _, _ in caches], final

    def advance(self, x: np.ndarray, state: State) -> State:
        """Run x (B, T) through the recurrent layers only: the state after it."""
        with self.threads.evaluation():
            return self._forward(x.T, state, Masks.none(self.config.layers))[1]

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One time step for sampling: tokens (B,) -> logits (B, V) float64 (the distribution
        is their softmax) and the new state."""
        with self.threads.evaluation():
            top, final, _ = self._forward(tokens[None, :], state, Masks.none(self.config.layers))
            return self.output.logits(self.params, top[0]), final
