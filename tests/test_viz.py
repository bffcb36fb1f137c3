"""lstm-lm viz: one self-contained page whose data is the model's own forward pass; a unit
planted to track quotes is found at the top of that feature's ranking; the page runs in a
real browser (headless Chromium, where installed)."""

import base64
import json
import shutil
import subprocess
from dataclasses import asdict
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import missing

from lstm_lm import checkpoint, viz
from lstm_lm.cli import main
from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.data import DataSource, Vocab
from lstm_lm.model import LanguageModel
from lstm_lm.train import TrainState

TEXT = (
    'she said "yes, in (a) moment" and left.\n'
    'then "no (not [yet])" again; see https://example.org/a//b </script> "ok".\n'
    "if (x) { y = f(z); /* a comment */ } // and one more\n"
)


class Page(HTMLParser):
    """The attributes and the script elements of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.attrs, self.scripts, self._in = [], [], None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.attrs += attrs
        if tag == "script":
            self._in = dict(attrs).get("id", "")
            self.scripts.append([self._in, ""])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self.scripts[-1][1] += data


def page_json(html: str) -> dict:
    scripts = Page(html).scripts
    assert [name for name, _ in scripts] == ["viz-data", ""]  # the data, then the code
    return json.loads(scripts[0][1])


def b64(s: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=dtype)


def planted(vocab: Vocab, unit: int = 3, H: int = 8, layers: int = 1, seed: int = 0):
    """A random LSTM but for `unit` of layer 0, whose cell flips between -1 and +1 at each
    '"': +1 from an opening quote to the closing one. On other tokens f ~ 1, i ~ 0 (keep);
    on a quote f ~ 0, i ~ 1 and g = tanh(K (0.38 - h)): +1 where h is -0.76 (outside) or 0
    (the start), -1 where h is +0.76 (inside)."""
    cfg = ModelConfig(vocab_size=len(vocab), hidden=H, layers=layers, init_scale=0.3)
    m = LanguageModel.init(cfg, np.random.default_rng(seed), dtype="float64")
    W, b = m.params["l0.W"], m.params["l0.b"]  # (H + V, 4H), columns [f | i | o | c]
    f, i, o, g = (k * H + unit for k in range(4))
    W[:, [f, i, o, g]] = 0.0
    b[[f, i, o, g]] = 20.0, -20.0, 20.0, 0.0
    q, K = H + vocab.stoi['"'], 20.0
    W[q, f], W[q, i], W[q, g] = -40.0, 40.0, 0.38 * K
    W[unit, g] = -K
    return m


def char_vocab(text: str) -> Vocab:
    return Vocab(tuple(sorted(set(text))), "char")


def save(tmp_path, model, vocab, best_valid=1.5):
    st = asdict(TrainState())
    st["best_valid"] = best_valid
    source = DataSource(level=vocab.level, train=str(tmp_path / "train.txt"))
    return checkpoint.save(tmp_path / "planted.npz", model, vocab, TrainConfig(), st, source)


def test_a_planted_quote_unit_tops_its_feature(tmp_path):
    vocab = char_vocab(TEXT)
    text = TEXT * 8
    ids, _ = vocab.encode(text)
    a = viz.analyse(planted(vocab, unit=5), vocab, ids)
    (layer, signal, unit, r) = a.ranking("inside quotes")[0]
    assert (layer, unit) == (0, 5) and signal in ("c", "h", "tanh(c)") and r > 0.95
    inside = viz.features(viz.surface(vocab, ids), "char")["inside quotes"]
    assert inside[TEXT.index('"')] == 1 and inside[TEXT.index('"') - 1] == 0
    assert inside[TEXT.index('"', TEXT.index('"') + 1)] == 0  # the closing quote is outside


def test_features_of_a_text():
    tokens = list('ab (c [d]) "e" /* f */ g\nh')
    f = viz.features(tokens, "char")
    at = lambda s: tokens.index(s)  # noqa: E731
    assert f["bracket depth"][at("d")] == 2 and f["bracket depth"][at("g")] == 0
    assert f["inside brackets"][at("c")] == 1 and f["inside brackets"][at(")")] == 0
    assert f["inside a comment"][at("f")] == 1 and f["inside a comment"][at("g")] == 0
    assert f["position in line"][at("h")] == 0 and f["position in line"][at("b")] == 1
    assert f["position in word"][at("b")] == 2 and f["position in word"][at(" ")] == 0
    w = viz.features("the ( cat ) sat \n a dog".split(" "), "word")
    assert w["position in sentence"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert w["bracket depth"].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]


def test_the_page_holds_the_forward_pass_and_no_address(tmp_path):
    vocab = char_vocab(TEXT)
    model = planted(vocab, unit=2, H=6, layers=2)
    ckpt = save(tmp_path, model, vocab)
    out = tmp_path / "page.html"
    r = CliRunner().invoke(main, ["viz", str(ckpt), "--text", TEXT * 3, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "inside quotes" in r.output and "layer 0 unit 2" in r.output
    html = out.read_text(encoding="utf-8")
    for needle in ("http:", "https:", "//"):  # the text's URL is in the page, escaped
        assert needle not in html
    assert not [v for k, v in Page(html).attrs if k in ("src", "href")]
    d = page_json(html)
    types, n = d["types"], d["n"]
    ids, _ = vocab.encode(TEXT * 3)
    tokens = b64(d["tokens"], f"<u{d['id_bytes']}")
    assert "".join(types[t] for t in tokens) == TEXT * 3 and n == len(ids)
    # the same model over the whole text in one window: what every value must equal
    logits, caches, _ = model.inspect(ids[None, :].astype(np.intp), model.init_state(1))
    logp = logits[:, 0] - np.logaddexp.reduce(logits[:, 0], axis=1, keepdims=True)
    p = b64(d["p"], "<f4")
    assert np.isnan(p[0])
    np.testing.assert_allclose(p[1:], np.exp(logp[np.arange(n - 1), ids[1:]]), rtol=1e-5)
    guesses = b64(d["guesses"], f"<u{d['id_bytes']}").reshape(n, d["k"])
    assert [types[g] for g in guesses[:, 0]] == [vocab.itos[i] for i in logp.argmax(axis=1)]
    assert d["units"] == [list(range(6))] * 2  # a small model: all of them
    for k, cache in enumerate(caches):
        for name, sig in viz.SIGNALS["lstm"].items():
            want = sig.of(cache)[:, 0].T  # (H, N)
            got = d["acts"][f"{k}/{name}"]
            lo, hi = np.array(got["lo"]), np.array(got["hi"])
            q = b64(got["q"], "<u1").reshape(len(lo), n)
            values = lo[:, None] + q * ((hi - lo) / 255)[:, None]
            half_step = (hi - lo)[:, None] / 510  # and float32's rounding of the value
            assert (np.abs(values - want) <= half_step * 1.001 + 1e-6).all(), (k, name)
    assert {s["name"] for s in d["signals"]} == {"h", "c", "tanh(c)", "f", "i", "o", "g"}
    assert {(s["layer"], s["gate"]) for s in d["saturation"]} == {
        (k, g) for k in (0, 1) for g in "fio"
    }
    assert d["facts"][0] == ["model", "lstm 2 x 6"]


def test_a_20k_token_page_stays_under_10_mb(tmp_path):
    vocab = char_vocab(TEXT)
    model = planted(vocab, unit=0, H=512, seed=1)
    ids, _ = vocab.encode((TEXT * 200)[:20_000])
    html, a = viz.report(model, vocab, ids, asdict(TrainState()))
    assert len(html.encode()) < 10 * 2**20
    assert 10 < len(a.units[0]) < 512 and 0 in a.units[0]  # the planted unit kept


def test_command_errors(tmp_path):
    vocab = char_vocab(TEXT)
    ckpt = str(save(tmp_path, planted(vocab), vocab))
    run = lambda *a: CliRunner().invoke(main, ["viz", *a])  # noqa: E731
    r = run(ckpt)
    assert r.exit_code == 2 and "--file F or --text T" in r.output
    r = run(ckpt, "--text", "a", "--file", "x.txt")
    assert r.exit_code == 2 and "does not go with" in r.output
    r = run(ckpt, "--file", str(tmp_path / "missing.txt"))
    assert r.exit_code == 1 and "no such file" in r.output
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    r = run(str(bad), "--text", "some text")
    assert r.exit_code == 1 and "Traceback" not in r.output
    r = run(ckpt, "--text", "\u00e9\u00e9")  # nothing the model knows
    assert r.exit_code == 1 and "fewer than 2 tokens" in r.output
    long = tmp_path / "long.txt"
    long.write_text(TEXT * 50)
    out = tmp_path / "p.html"
    r = run(ckpt, "--file", str(long), "--max-tokens", "100", "--out", str(out))
    assert r.exit_code == 0 and "first 100 tokens" in r.output
    assert page_json(out.read_text())["n"] == 100


def test_a_word_level_run(tiny_run, tmp_path):
    out = tmp_path / "w.html"
    r = CliRunner().invoke(main, ["viz", str(tiny_run), "--text", "a b c\nd e f zz",
                                  "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "1 unknown tokens are skipped: 'zz'" in r.output  # the vocabulary has no <unk>
    assert "not in this text" in r.output  # no quotes, no brackets
    d = page_json(out.read_text())
    tokens = b64(d["tokens"], f"<u{d['id_bytes']}")
    assert [d["types"][t] for t in tokens] == ["a", "b", "c", "\n", "d", "e", "f"]
    assert [f["name"] for f in d["features"]] == ["position in sentence"]
    assert d["facts"][2][0] == "valid" and d["facts"][2][1].startswith("ppl ")


@pytest.mark.parametrize("cell, signals, gates", [
    ("gru", ["h", "z", "r", "n"], ["z", "r"]),
    ("rnn", ["h"], []),
    ("janet", ["h", "f", "g"], ["f"]),
])  # fmt: skip
def test_other_cells_show_their_own_signals(cell, signals, gates):
    vocab = char_vocab(TEXT)
    cfg = ModelConfig(vocab_size=len(vocab), hidden=5, layers=2, cell=cell)
    model = LanguageModel.init(cfg, np.random.default_rng(0), dtype="float64")
    ids, _ = vocab.encode(TEXT)
    html, a = viz.report(model, vocab, ids, asdict(TrainState()))
    d = page_json(html)
    assert [s["name"] for s in d["signals"]] == signals
    assert [s["gate"] for s in d["saturation"]] == gates * 2
    assert sorted(d["acts"]) == sorted(f"{k}/{s}" for k in (0, 1) for s in signals)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_in_a_real_browser(tmp_path):
    if CHROMIUM is None:
        missing("chromium", "needs Debian's chromium (apt-get install chromium)")
    vocab = char_vocab(TEXT)
    ckpt = save(tmp_path, planted(vocab, unit=1, H=6), vocab)
    out = tmp_path / "page.html"
    r = CliRunner().invoke(main, ["viz", str(ckpt), "--text", TEXT, "--out", str(out)])
    assert r.exit_code == 0, r.output

    def colours(fragment: str) -> list[str]:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
             out.as_uri() + fragment],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        spans = [a for a in SpanStyles(dom).spans]
        assert len(spans) == len(TEXT)  # every token drawn
        return spans

    unit1 = colours("#layer=0&unit=1&signal=c")
    assert all("background-color: rgb(" in s for s in unit1)  # all coloured
    assert unit1 != colours("#layer=0&unit=4&signal=c")  # another unit, other colours
    assert unit1 != colours("#layer=0&unit=1&signal=c&mode=surprisal")


class SpanStyles(HTMLParser):
    """The style of each token span (class "t") of a page's DOM."""

    def __init__(self, dom: str):
        super().__init__()
        self.spans = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and "t" in (a.get("class") or "").split():
            self.spans.append(a.get("style") or "")


def test_hash_comments_count_but_not_c_preprocessor_lines_nor_ptb_pounds():
    text = "#include <x.h>\nx = 1  # set x\n#!/bin/sh\ny = 2\n"
    f = viz.features(list(text), "char")["inside a comment"]
    assert f[text.index("# set")] == 1 and f[text.index("set x")] == 1
    assert f[text.index("/bin/sh")] == 1  # a shebang is a comment line too
    assert f[text.index("include")] == 0 and f[text.index("y = 2")] == 0
    assert f[text.index("x = 1")] == 0
    assert "inside a comment" not in viz.features(list("a # 200 b"), "char", comments=False)
