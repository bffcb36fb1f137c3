"""What a trained network computes on a text, for `lstm-lm viz`: every unit's state and
gates token by token, the model's guesses at the next token, gate saturation, and the units
that follow simple features of the text; `page` renders it as one self-contained HTML file.

Dimensions: N tokens of the text, L layers, H units a layer, U units of a layer kept in the
page, F features of the text, K guesses a token.

A signal is one per-unit array of a cell: h, c, tanh(c) and the gates f i o g of the LSTM;
h and z r n of the GRU; h of the plain RNN; h (its cell) and f g of JANET.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

import numpy as np

from lstm_lm import LMError
from lstm_lm.data import Vocab, as_index
from lstm_lm.losses import bits_per_char, perplexity
from lstm_lm.model import LanguageModel
from lstm_lm.tokenise import EOS, UNK

MAX_TOKENS = 20_000  # a page's default length: some 9 MB
WINDOW = 256  # tokens run through the model at a time (the state carried between windows)
K = 5  # guesses shown under a token
TOP = 5  # units listed for each feature
PAGE_BYTES = 6_500_000  # activations kept in a page, one byte each (base64: 4/3 of that)
LOW, HIGH = 0.1, 0.9  # a gate below LOW or above HIGH is saturated (Karpathy et al. 2015)


class Signal(NamedTuple):
    of: Callable  # a layer's cell cache -> (T, B, H)
    bounds: tuple[float, float] | None  # its range (colour scale), None: unbounded (a cell)
    gate: bool = False  # a sigmoid gate: its saturation is plotted


def _columns(k: int, n: int) -> Callable:
    """The k-th of n column blocks of a cache's gate activations `act` (T, B, n * H)."""
    return lambda c: c.act[..., k * (c.act.shape[-1] // n) : (k + 1) * (c.act.shape[-1] // n)]


TANH, SIGMOID = (-1.0, 1.0), (0.0, 1.0)
SIGNALS: dict[str, dict[str, Signal]] = {
    "lstm": {
        "h": Signal(lambda c: c.h[1:], TANH),
        "c": Signal(lambda c: c.c[1:], None),
        "tanh(c)": Signal(lambda c: c.tanh_c, TANH),
        "f": Signal(_columns(0, 4), SIGMOID, True),
        "i": Signal(_columns(1, 4), SIGMOID, True),
        "o": Signal(_columns(2, 4), SIGMOID, True),
        "g": Signal(_columns(3, 4), TANH),
    },
    "gru": {
        "h": Signal(lambda c: c.h[1:], TANH),
        "z": Signal(_columns(0, 3), SIGMOID, True),
        "r": Signal(_columns(1, 3), SIGMOID, True),
        "n": Signal(_columns(2, 3), TANH),
    },
    "rnn": {"h": Signal(lambda c: c.h[1:], TANH)},
    "janet": {
        "h": Signal(lambda c: c.h[1:], None),
        "f": Signal(lambda c: c.f, SIGMOID, True),
        "g": Signal(lambda c: c.g, TANH),
    },
}


# ---------------------------------------------------------------------------------------
# Features of the text: what a unit may be found to track. Each is (N,) float, from the
# tokens' surface strings (`surface`); a feature constant over a text is left out.

OPEN, CLOSE = set("([{") | {"-lrb-", "-lcb-", "-lsb-"}, set(")]}") | {"-rrb-", "-rcb-", "-rsb-"}
# /* */ and // (C, C++, Java, JavaScript, Go, ...), # to the end of the line (Python, shell,
# Ruby, YAML, ...) but not C's preprocessor lines.
COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)|//[^\n]*|#(?!(?:include|define|undef|if|ifdef|ifndef|"
                     r"elif|else|endif|pragma|error|line)\b)[^\n]*", re.S)  # fmt: skip


def surface(vocab: Vocab, ids: np.ndarray) -> list[str]:
    """Each token as it reads in the text: a line break for `<eos>`, a space for PTB's `_`
    (char level), the word itself at word level; unknown characters as U+FFFD."""
    out = []
    for i in ids.tolist():
        s = vocab.itos[i]
        if s == EOS:
            s = "\n"
        elif vocab.level == "char" and (s == UNK or len(s) != 1):
            s = "\ufffd"
        elif vocab.level == "char" and s == "_" and vocab.ptb_chars:
            s = " "
        out.append(s)
    return out


def _since(starts: np.ndarray) -> np.ndarray:
    """For each position, how many positions since the last True of `starts` (N,) bool,
    which is True at position 0."""
    n = np.arange(len(starts))
    last = np.maximum.accumulate(np.where(starts, n, -1))
    return (n - last).astype(np.float64)


def features(tokens: list[str], level: str, comments: bool = True) -> dict[str, np.ndarray]:
    """The features of a text of N tokens (surface strings), each (N,) float64: its value
    after reading each token (an opening quote is inside the quotes, a closing one not).
    `comments`: at char level, whether the text may hold code comments (not PTB's text,
    where # is the pound sign)."""
    arr = np.array(tokens, dtype=object)
    eol = arr == "\n"
    depth = np.cumsum(np.isin(arr, list(OPEN)).astype(int) - np.isin(arr, list(CLOSE)))
    depth = depth - np.minimum.accumulate(np.minimum(depth, 0))  # a stray ")" starts again at 0
    quotes = np.isin(arr, ['"', "``", "''"]) if level == "word" else arr == '"'
    out = {
        "position in line" if level == "char" else "position in sentence": _since(
            np.r_[True, eol[:-1]]
        ),
        "inside quotes": (np.cumsum(quotes) % 2).astype(np.float64),
        "inside brackets": (depth > 0).astype(np.float64),
        "bracket depth": depth.astype(np.float64),
    }
    if level == "char":
        word = np.array([s.isalnum() or s == "_" for s in tokens])
        out["position in word"] = np.where(word, _since(~np.r_[False, word[:-1]]) + 1, 0.0)
    if level == "char" and comments:
        text = "".join(tokens)  # one character a token
        comment = np.zeros(len(tokens))
        for m in COMMENT.finditer(text):
            comment[m.start() : m.end()] = 1.0
        out["inside a comment"] = comment
    return out


# ---------------------------------------------------------------------------------------
# The model over the text.


def _windows(model: LanguageModel, ids: np.ndarray) -> Iterator[tuple[int, np.ndarray, list]]:
    """(start, logits (t, V) float64, each layer's cell cache) for consecutive windows of
    the text as one stream, the state carried from one to the next."""
    state = model.init_state(1)
    for s in range(0, len(ids), WINDOW):
        logits, caches, state = model.inspect(as_index(ids[None, s : s + WINDOW]), state)
        yield s, logits[:, 0], caches


def _signals(model: LanguageModel, caches: list) -> Iterator[tuple[int, str, np.ndarray]]:
    """(layer, signal name, values (t, H)) of one window's caches (stream 0)."""
    for k, cache in enumerate(caches):
        for name, sig in SIGNALS[model.config.cell].items():
            yield k, name, sig.of(cache)[:, 0]


@dataclass
class Analysis:
    """What `analyse` finds; `page_data` is what the page embeds."""

    ids: np.ndarray  # (N,) the text's token ids
    tokens: list[str]  # (N,) their surface strings
    nll: np.ndarray  # (N,) nats of each token given the ones before (nan for the first)
    guesses: np.ndarray  # (N, K) the most likely next tokens after each token
    guess_p: np.ndarray  # (N, K) their probabilities
    r: dict[str, dict[tuple[int, str], np.ndarray]]  # feature -> (layer, signal) -> (H,)
    absent: list[str]  # features constant over this text
    saturation: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]  # fraction <LOW, >HIGH
    spread: dict[tuple[int, str], np.ndarray]  # (H,) standard deviation of each unit
    units: list[np.ndarray]  # per layer (U,): the units kept in the page, ascending
    values: dict[tuple[int, str], np.ndarray]  # (U, N) float32 of the kept units

    def ranking(self, feature: str, top: int = TOP) -> list[tuple[int, str, int, float]]:
        """The (layer, signal, unit, r) that follow `feature` best (largest |r|)."""
        rows = [(k, s, u, float(r[u])) for (k, s), r in self.r[feature].items() for u in
                range(len(r))]  # fmt: skip
        return sorted(rows, key=lambda x: -abs(x[3]))[:top]


def analyse(model: LanguageModel, vocab: Vocab, ids: np.ndarray, units: int | None = None,
            page_bytes: int = PAGE_BYTES) -> Analysis:  # fmt: skip
    """Run the model over `ids` (N,) as one stream and gather what the page shows: the
    correlation of every unit's signals with the text's features, gate saturation, the
    guesses; then the values of `units` units a layer (default: as many as keep the
    activations within `page_bytes`), those that follow a feature best first."""
    N, L, H = len(ids), model.config.layers, model.config.hidden
    if N < 2:
        raise LMError("the text has fewer than 2 tokens the model knows; give more text")
    tokens = surface(vocab, ids)
    feats = features(tokens, vocab.level, comments=not vocab.ptb_chars)
    absent = [f for f, x in feats.items() if x.std() == 0]
    names = [f for f in feats if f not in absent]
    X = np.stack([feats[f] - feats[f].mean() for f in names], axis=1) if names else None  # (N, F)
    k = min(K, len(vocab))
    nll, guesses, guess_p = np.full(N, np.nan), np.empty((N, k), np.int64), np.empty((N, k))
    sums = {}  # (layer, signal) -> [sum a, sum a^2, X^T a (F, H), count < LOW, count > HIGH]
    for s, logits, caches in _windows(model, ids):
        t = len(logits)
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))  # (t, V)
        top = np.argpartition(-logp, k - 1, axis=1)[:, :k]  # (t, k), then in order
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(logp, top, 1), 1), 1)
        guesses[s : s + t], guess_p[s : s + t] = top, np.exp(np.take_along_axis(logp, top, 1))
        nxt = ids[s + 1 : s + t + 1]  # the token each row predicts (none after the last)
        nll[s + 1 : s + 1 + len(nxt)] = -logp[np.arange(len(nxt)), nxt]
        for layer, name, a in _signals(model, caches):
            a = a.astype(np.float64)  # (t, H)
            acc = sums.setdefault((layer, name), [0.0, 0.0, 0.0, 0, 0])
            acc[0] = acc[0] + a.sum(axis=0)
            acc[1] = acc[1] + (a * a).sum(axis=0)
            if X is not None:
                acc[2] = acc[2] + X[s : s + t].T @ a
            acc[3] = acc[3] + (a < LOW).sum(axis=0)
            acc[4] = acc[4] + (a > HIGH).sum(axis=0)
    var = {key: np.maximum(acc[1] / N - (acc[0] / N) ** 2, 0.0) for key, acc in sums.items()}
    r = {f: {} for f in names}
    for j, f in enumerate(names):
        norm = np.sqrt((X[:, j] ** 2).sum())
        for key, acc in sums.items():
            sd = np.sqrt(var[key] * N)
            r[f][key] = np.where(sd > 1e-12, acc[2][j] / np.maximum(sd * norm, 1e-300), 0.0)
    cell = SIGNALS[model.config.cell]
    saturation = {key: (acc[3] / N, acc[4] / N) for key, acc in sums.items() if cell[key[1]].gate}
    spread = {key: np.sqrt(v) for key, v in var.items()}
    a = Analysis(ids, tokens, nll, guesses, guess_p, r, absent, saturation, spread, [], {})
    if units is None:
        units = page_bytes // (N * L * len(cell))
    a.units = _choose_units(a, next(iter(cell)), L, H, max(1, min(H, units)))
    a.values = _values(model, ids, a.units)
    return a


def _choose_units(a: Analysis, first: str, L: int, H: int, U: int) -> list[np.ndarray]:
    """U units of each layer: first those that follow a feature best (by |r| over all
    features and signals), then the most variable (the spread of signal `first`)."""
    chosen = []
    for k in range(L):
        best = np.zeros(H)
        for per_key in a.r.values():
            for (layer, _), r in per_key.items():
                if layer == k:
                    best = np.maximum(best, np.abs(r))
        order = np.lexsort((-a.spread[(k, first)], -best))  # by |r|, ties by spread
        chosen.append(np.sort(order[:U]))
    return chosen


def _values(model: LanguageModel, ids: np.ndarray, units: list[np.ndarray]) -> dict:
    """(layer, signal) -> the kept units' values over the text, (U, N) float32."""
    out = {}
    for s, _, caches in _windows(model, ids):
        for k, name, a in _signals(model, caches):
            v = out.setdefault((k, name), np.empty((len(units[k]), len(ids)), np.float32))
            v[:, s : s + len(a)] = a[:, units[k]].T
    return out


# ---------------------------------------------------------------------------------------
# The page.


def quantise(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of v (U, N) as uint8 codes q with v ~ lo + q * (hi - lo) / 255, per row; the
    error is at most half a step, (hi - lo) / 510."""
    lo, hi = v.min(axis=1).astype(np.float64), v.max(axis=1).astype(np.float64)
    step = np.where(hi > lo, (hi - lo) / 255, 1.0)
    q = np.clip(np.rint((v - lo[:, None]) / step[:, None]), 0, 255).astype(np.uint8)
    return q, lo, hi


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def page_data(a: Analysis, model: LanguageModel, vocab: Vocab, facts: list[tuple[str, str]]):
    """The JSON the page embeds (decoded by its script; `tests/test_viz.py` reads it back)."""
    N, cell = len(a.ids), SIGNALS[model.config.cell]
    types, index = _types(a, vocab)
    ids = "<u2" if len(types) <= 1 << 16 else "<u4"
    acts = {}
    for (k, name), v in a.values.items():
        q, lo, hi = quantise(v)
        acts[f"{k}/{name}"] = {"q": _b64(q, "<u1"), "lo": lo.tolist(), "hi": hi.tolist()}
    return {
        "facts": facts,
        "level": vocab.level,
        "n": N,
        "layers": model.config.layers,
        "hidden": model.config.hidden,
        "types": types,
        "id_bytes": int(ids[-1]),
        "tokens": _b64(index[a.ids], ids),  # (N,) into types
        "p": _b64(np.exp(-a.nll), "<f4"),  # (N,) nan for the first token
        "k": a.guesses.shape[1],
        "guesses": _b64(index[a.guesses], ids),  # (N, k) into types
        "guess_p": _b64(np.rint(a.guess_p * 65535), "<u2"),  # (N, k) in 1/65535
        "signals": [{"name": s, "bounds": sig.bounds, "gate": sig.gate} for s, sig in cell.items()],
        "units": [u.tolist() for u in a.units],
        "acts": acts,
        "saturation": [
            {"layer": k, "gate": g, "low": _round(lo), "high": _round(hi)}
            for (k, g), (lo, hi) in a.saturation.items()
        ],
        "features": [{"name": f, "units": [_unit(*x) for x in a.ranking(f)]} for f in a.r],
        "absent": a.absent,
    }


def _unit(layer: int, signal: str, unit: int, r: float) -> dict:
    return {"layer": layer, "signal": signal, "unit": unit, "r": round(r, 4)}


def _round(x: np.ndarray) -> list[float]:
    return np.round(x, 4).tolist()


def _types(a: Analysis, vocab: Vocab) -> tuple[list[str], np.ndarray]:
    """The token types the page names (of the text and of the guesses), as they read, and
    the map from vocabulary id to their index."""
    used = np.union1d(a.ids, a.guesses.ravel())
    index = np.zeros(len(vocab), np.int64)
    index[used] = np.arange(len(used))
    return surface(vocab, used), index


def facts(model: LanguageModel, vocab: Vocab, train_state: dict, a: Analysis) -> list:
    """The header of the page: the model, its validation figure, the text."""
    c, best = model.config, train_state.get("best_valid")
    unit = "characters" if vocab.level == "char" else "words"
    out = [("model", f"{c.cell} {c.layers} x {c.hidden}"), ("vocabulary", f"{len(vocab):,} {unit}")]
    if best is not None and np.isfinite(best):
        out.append(("valid", _figure(best, vocab.level)))
    out.append(("this text", f"{len(a.ids):,} tokens, {_figure(np.nanmean(a.nll), vocab.level)}"))
    shown = len(a.units[0])
    out.append(("units in the page", f"{shown} of {c.hidden} a layer" if shown < c.hidden
                else f"all {c.hidden} a layer"))  # fmt: skip
    return out


def _figure(nll: float, level: str) -> str:
    """A mean NLL (nats) as bits per character, or as perplexity at word level."""
    bpc = bits_per_char(float(nll), level)
    return f"{bpc:.3f} bpc" if bpc is not None else f"ppl {perplexity(float(nll)):.1f}"


def page(data: dict) -> str:
    """The HTML page: viz.html with the data in a JSON script element. Every "/" and "<" of
    the JSON is escaped ("\\/", "\\u003c": the same strings to a JSON parser), so no text
    can close the element early, and the page holds no "//" at all, not even where the text
    has URLs."""
    template = resources.files("lstm_lm").joinpath("viz.html").read_text(encoding="utf-8")
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    blob = blob.replace("/", "\\/").replace("<", "\\u003c")
    title = "".join(x for x in data["facts"][0][1] if x.isalnum() or x in " x")
    return template.replace("__TITLE__", title).replace("__DATA__", blob)


def report(model: LanguageModel, vocab: Vocab, ids: np.ndarray, train_state: dict,
           units: int | None = None) -> tuple[str, Analysis]:  # fmt: skip
    """The page for a text's ids (N,), and the analysis behind it."""
    a = analyse(model, vocab, ids, units)
    return page(page_data(a, model, vocab, facts(model, vocab, train_state, a))), a
