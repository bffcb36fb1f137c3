"""Frozen settings for the model and for training, and the named presets.

Defaults live here and nowhere else; the CLI only overrides what the user gives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lstm_lm import LMError
from lstm_lm.cells import CELL_TYPES
from lstm_lm.optim import OPTIMIZERS

LEVELS = ("word", "char", "bpe")
DTYPES = ("float32", "float64")
SOFTMAXES = ("full", "adaptive")  # the output layers: softmax.FullSoftmax, adaptive


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden: int = 200
    layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.0  # on non-recurrent connections (Zaremba et al. 2014)
    input_dropout: float = 0.0  # on the token rows of layer 0 (the one-hot input's analogue)
    init_scale: float = 0.1  # weights uniform in +-init_scale
    forget_bias: float = 0.0  # initial bf (TF's BasicLSTMCell uses 1.0)
    chrono: int = 0  # JANET: bf ~ log U(1, chrono - 1) (Tallec & Ollivier 2018); 0 = off
    variational: bool = False  # dropout masks shared by the T steps of a window (Gal 2016)
    word_dropout: float = 0.0  # a token type's input dropped for a whole window
    weight_drop: float = 0.0  # DropConnect on the recurrent weights (Merity et al. 2017)
    ar: float = 0.0  # alpha of activation regularisation (Merity et al. 2017; they use 2)
    tar: float = 0.0  # beta of temporal activation regularisation (they use 1)
    softmax: str = "full"  # the output layer; "adaptive": Grave et al. 2017 (lstm_lm.adaptive)
    cutoffs: tuple[int, ...] | None = None  # its clusters' bounds by frequency rank (None: default)
    tied: bool = False  # the token enters through E (V, H), the output layer's weight (Inan 2017)

    def __post_init__(self):
        if self.cutoffs is not None:  # a list when read from JSON
            object.__setattr__(self, "cutoffs", tuple(self.cutoffs))
        _check(self.vocab_size >= 2, "vocab size must be at least 2")
        _check(self.hidden >= 1, "--hidden must be at least 1")
        _check(self.layers >= 1, "--layers must be at least 1")
        _check(self.cell in CELL_TYPES, f"--cell must be one of {', '.join(CELL_TYPES)}")
        _check(0.0 <= self.dropout < 1.0, "--dropout must be in [0, 1)")
        _check(0.0 <= self.input_dropout < 1.0, "--input-dropout must be in [0, 1)")
        _check(0.0 <= self.word_dropout < 1.0, "--word-dropout must be in [0, 1)")
        _check(0.0 <= self.weight_drop < 1.0, "--weight-drop must be in [0, 1)")
        _check(self.ar >= 0, "--ar must be >= 0")
        _check(self.tar >= 0, "--tar must be >= 0")
        _check(self.init_scale > 0, "--init-scale must be positive")
        _check(self.softmax in SOFTMAXES, f"--softmax must be one of {', '.join(SOFTMAXES)}")
        _check(
            self.cutoffs is None
            or (len(self.cutoffs) > 0 and all(isinstance(c, int) for c in self.cutoffs)
                and self.cutoffs[0] >= 1 and list(self.cutoffs) == sorted(set(self.cutoffs))),
            "--cutoffs must be increasing positive whole numbers, e.g. 2000,10000",
        )  # fmt: skip
        _check(
            self.chrono == 0 or (self.chrono >= 3 and self.cell == "janet"),
            "--chrono needs --cell janet and a value of at least 3",
        )
        _check(
            not (self.tied and self.softmax == "adaptive"),
            "--tied shares the full softmax's weight with the input; it does not go with "
            "--softmax adaptive",
        )

    @property
    def gate_columns(self) -> int:
        """G: the columns of every layer's W, gates x H."""
        return len(CELL_TYPES[self.cell].gates) * self.hidden

    @property
    def input_width(self) -> int:
        """D_0: the width of layer 0's input, the one-hot token (V) or its embedding (H)."""
        return self.hidden if self.tied else self.vocab_size

    @property
    def token_columns(self) -> int:
        """The width of what input dropout masks at each position: the token's row of layer
        0's W (G), or with --tied the token's embedding (H)."""
        return self.hidden if self.tied else self.gate_columns


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 20
    bptt: int = 20
    epochs: int = 13
    lr: float = 1.0
    lr_decay: float = 0.5  # lr of epoch e (1-based) = lr * lr_decay ** max(0, e - decay_after)
    decay_after: int = 4
    optimizer: str = "sgd"
    asgd: bool = False  # average SGD's iterates once validation stalls (Merity et al. 2017)
    asgd_patience: int = 5  # ... once it is worse than the best before the last N evaluations
    asgd_after: int | None = None  # ... or at the end of this epoch, whichever comes first
    clip: float = 5.0  # max global gradient norm (0: no clipping)
    # Learning-rate multiplier for the one-hot token rows of layer 0 (SGD; applied after
    # clipping). An embedding model moves a word's gate input by (W_x^T W_x + |e|^2) g per
    # step, several times the plain gradient g our direct token rows get; 10 matches the
    # published first-epoch perplexity of Zaremba's small model (valid 174 vs 236 at 1).
    token_lr_scale: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    max_steps: int | None = None  # optimisation steps of the whole run, resumes included
    max_tokens: int | None = None  # training tokens of the whole run
    max_minutes: float | None = None  # of training and evaluation (`elapsed`), the whole run
    eval_every: int | None = None  # also evaluate every N steps
    valid_tokens: int | None = None  # validate on the first N (default: up to VALID_CAP)
    save_every: float = 5.0  # minutes between saves of last.npz (besides every evaluation); 0: off

    def __post_init__(self):
        for name in ("batch_size", "bptt", "epochs"):
            _check(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be at least 1")
        _check(self.lr > 0, "--lr must be positive")
        _check(0 < self.lr_decay <= 1, "--lr-decay must be in (0, 1]")
        _check(self.decay_after >= 0, "--decay-after must be >= 0")
        _check(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        _check(self.clip >= 0, "--clip must be >= 0")
        _check(self.asgd_patience >= 1, "--asgd-patience must be at least 1")
        _check(self.asgd_after is None or self.asgd_after >= 1, "--asgd-after must be at least 1")
        _check(self.token_lr_scale > 0, "--token-lr-scale must be positive")
        _check(self.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}")
        for name in ("max_steps", "max_tokens", "eval_every", "valid_tokens"):
            v = getattr(self, name)
            _check(v is None or v >= 1, f"--{name.replace('_', '-')} must be at least 1")
        _check(self.save_every >= 0, "--save-every must be >= 0")
        _check(self.max_minutes is None or self.max_minutes > 0, "--max-minutes must be positive")

    def validation_tokens(self, available: int) -> int:
        """How many tokens of a validation split of this length the run validates on."""
        return min(available, self.valid_tokens or VALID_CAP)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of a 1-based epoch."""
        return self.lr * self.lr_decay ** max(0, epoch - self.decay_after)


# Validation takes at most this many tokens unless told otherwise (--valid-tokens): a tenth
# of a gigabyte corpus would take longer to evaluate than the training between evaluations.
VALID_CAP = 2_000_000

# What `--resume` may change: how long the run goes on and how often it is evaluated.
RESUMABLE = ("epochs", "max_steps", "max_tokens", "max_minutes", "eval_every", "save_every")


DEFAULT_CUTOFFS = (2000, 10000, 50000)  # --softmax adaptive: the cutoffs below V, unless given


def default_cutoffs(vocab_size: int) -> tuple[int, ...]:
    """The DEFAULT_CUTOFFS below the vocabulary size; an LMError if there is none."""
    cutoffs = tuple(c for c in DEFAULT_CUTOFFS if c < vocab_size)
    if not cutoffs:
        raise LMError(
            f"--softmax adaptive: the vocabulary has {vocab_size:,} types, no more than the "
            f"default first cutoff {DEFAULT_CUTOFFS[0]:,}; give --cutoffs below {vocab_size:,} "
            "or use --softmax full"
        )
    return cutoffs


def check_cutoffs(cutoffs: tuple[int, ...], vocab_size: int) -> None:
    """An LMError unless every cutoff is below the vocabulary size."""
    if cutoffs[-1] >= vocab_size:
        raise LMError(
            f"--cutoffs {','.join(map(str, cutoffs))}: the vocabulary has {vocab_size:,} types; "
            f"every cutoff must be below that"
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LMError(message)


# Presets: the token level, model and training fields; explicit options override them. Their
# figures, the commands that gave them, and what was tried before: docs/results.md.
# fmt: off
PRESETS: dict[str, dict] = {
    # The from-scratch tutorial model.
    "seed": dict(layers=1, hidden=128, batch_size=20, bptt=20, epochs=6, lr=1.0, lr_decay=0.5,
                 decay_after=4, clip=5.0, init_scale=0.1, dropout=0.0, token_lr_scale=10.0),
    # Zaremba et al. 2014's small model with light dropout: one-hot rows overfit without it.
    "small": dict(layers=2, hidden=200, batch_size=20, bptt=20, epochs=13, lr=1.0, lr_decay=0.5,
                  decay_after=5, clip=5.0, init_scale=0.1, dropout=0.2, input_dropout=0.2,
                  token_lr_scale=10.0),
    # The best for 90 minutes on two CPU cores; why these regularisers: docs/results.md.
    "laptop": dict(layers=2, hidden=400, batch_size=20, bptt=35, epochs=21, lr=1.0, lr_decay=1.0,
                   asgd=True, asgd_after=15, clip=5.0, init_scale=0.05, dropout=0.4,
                   input_dropout=0.3, variational=True, weight_drop=0.2, ar=2.0, tar=1.0,
                   token_lr_scale=10.0),
    # Zaremba et al. 2014's medium model.
    "medium": dict(layers=2, hidden=650, batch_size=20, bptt=35, epochs=39, lr=1.0, lr_decay=0.8,
                   decay_after=6, clip=5.0, init_scale=0.05, dropout=0.5, token_lr_scale=10.0),
    # `laptop`'s regularisers, stronger, at Zaremba's medium size (Gal & Ghahramani's 2 x 650).
    "medium-vd": dict(layers=2, hidden=650, batch_size=20, bptt=35, epochs=40, lr=1.0,
                      lr_decay=1.0, asgd=True, asgd_after=30, clip=5.0, init_scale=0.05,
                      dropout=0.5, input_dropout=0.4, variational=True, weight_drop=0.3, ar=2.0,
                      tar=1.0, token_lr_scale=10.0),
    # `medium-vd` with tied input and output embeddings (Inan et al. 2017).
    "medium-tied": dict(layers=2, hidden=650, batch_size=20, bptt=35, epochs=40, lr=1.0,
                        lr_decay=1.0, asgd=True, asgd_after=30, clip=5.0, init_scale=0.05,
                        dropout=0.5, input_dropout=0.4, variational=True, weight_drop=0.3,
                        ar=2.0, tar=1.0, tied=True),
    # `laptop` with tied embeddings, 20 epochs (the last six averaged) to fit 90 minutes here.
    "laptop-tied": dict(layers=2, hidden=400, batch_size=20, bptt=35, epochs=20, lr=1.0,
                        lr_decay=1.0, asgd=True, asgd_after=14, clip=5.0, init_scale=0.05,
                        dropout=0.4, input_dropout=0.3, variational=True, weight_drop=0.2,
                        ar=2.0, tar=1.0, tied=True),
    # Character-level PTB sized for an hour on two CPU cores (with --max-minutes 59.5): short
    # windows, for more updates per token; dropout before the softmax against overfitting.
    "char": dict(level="char", layers=1, hidden=512, batch_size=32, bptt=50, epochs=11, lr=3e-3,
                 lr_decay=0.5, decay_after=8, optimizer="adam", clip=5.0, init_scale=0.08,
                 forget_bias=1.0, dropout=0.2),
}
# fmt: on

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size")
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class Settings:
    """A resolved configuration: the preset it started from, the token level, the model's
    fields (all but the vocabulary size, which the data decides), the training config, and
    where each value came from (`origins`: "option", "preset NAME" or "default")."""

    preset: str
    level: str
    model: dict
    train: TrainConfig
    origins: dict

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model's config for a vocabulary of this size: an adaptive softmax's default
        cutoffs filled in (those below it), so that the checkpoint records them."""
        model = dict(self.model)
        if model.get("softmax") == "adaptive" and model.get("cutoffs") is None:
            model["cutoffs"] = default_cutoffs(vocab_size)
        if model.get("cutoffs") is not None:
            check_cutoffs(model["cutoffs"], vocab_size)
        return ModelConfig(vocab_size=vocab_size, **model)

    def values(self) -> dict:
        """Every setting by name (the model's defaults filled in), in declaration order; an
        adaptive softmax's default cutoffs are DEFAULT_CUTOFFS (those below V apply)."""
        model = dataclasses.asdict(ModelConfig(vocab_size=2, **self.model))
        del model["vocab_size"]
        if model["softmax"] == "adaptive" and model["cutoffs"] is None:
            model["cutoffs"] = DEFAULT_CUTOFFS
        return {"level": self.level, **model, **dataclasses.asdict(self.train)}


def resolve(preset: str | None = None, overrides: dict | None = None) -> Settings:
    """A preset's values updated by the given (non-None) overrides, all validated. Without a
    preset: `char` for char level, else `small`. A preset's value that does not apply to the
    chosen optimiser or cell is dropped; the same value given as an option is refused."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    preset = preset or ("char" if given.get("level") == "char" else "small")
    if preset not in PRESETS:
        raise LMError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **given}
    origins = {k: "option" if k in given else f"preset {preset}" if k in merged else "default"
               for k in ("level", *MODEL_FIELDS, *TRAIN_FIELDS)}  # fmt: skip
    for name, applies, why in _ONLY_FOR:
        if name in merged and not applies(merged):
            if name in given:
                raise LMError(why.format(**merged))
            origins[name] = f"default (preset {preset}'s {merged.pop(name)} does not apply)"
    if merged.get("softmax") == "adaptive" and "cutoffs" not in merged:
        origins["cutoffs"] = "default (those below the vocabulary size)"
    level = merged.pop("level", "word")
    _check(level in LEVELS, f"--level must be one of {', '.join(LEVELS)}")
    unknown = set(merged) - {*MODEL_FIELDS, *TRAIN_FIELDS}
    if unknown:
        raise LMError(f"unknown settings: {', '.join(sorted(unknown))}")
    model = {k: v for k, v in merged.items() if k in MODEL_FIELDS}
    ModelConfig(vocab_size=2, **model)  # validate now, before any data is loaded
    train = TrainConfig(**{k: v for k, v in merged.items() if k in TRAIN_FIELDS})
    return Settings(preset, level, model, train, origins)


# Settings that mean something only with some others: (name, applies(merged), refusal).
_ONLY_FOR = (
    ("token_lr_scale", lambda m: m.get("optimizer", "sgd") == "sgd" or m["token_lr_scale"] == 1,
     "--token-lr-scale multiplies the SGD learning rate; it does not go with --optimizer "
     "{optimizer}"),
    ("token_lr_scale", lambda m: not m.get("tied", False) or m["token_lr_scale"] == 1,
     "--token-lr-scale multiplies the learning rate of the one-hot token rows; with --tied "
     "there are none (the embedding E is also the output layer)"),
    ("asgd", lambda m: m.get("optimizer", "sgd") == "sgd" or not m["asgd"],
     "--asgd averages the iterates of SGD; it does not go with --optimizer {optimizer}"),
    ("asgd_after", lambda m: m.get("asgd", False),
     "--asgd-after says when --asgd starts averaging; give --asgd too"),
    ("cutoffs", lambda m: m.get("softmax", "full") == "adaptive",
     "--cutoffs sets the clusters of the adaptive softmax; give --softmax adaptive too"),
    ("forget_bias", lambda m: "f" in CELL_TYPES[m.get("cell", "lstm")].gates
     or m["forget_bias"] == 0,
     "--forget-bias sets a forget gate's bias; --cell {cell} has no forget gate"),
)  # fmt: skip
