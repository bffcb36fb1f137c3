"""Preparing a run directory for `train.fit`: a new run (data loaded, model initialised),
a resumed one (from its newest checkpoint, exactly where it stopped), or a fine-tuned one
(`--init-from`: a trained model on new text, its vocabulary kept or extended)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstm_lm import LMError, cache, checkpoint
from lstm_lm.adaptive import frequency_order
from lstm_lm.atomic import write_atomic
from lstm_lm.config import RESUMABLE, Settings, TrainConfig
from lstm_lm.data import UNK, Corpus, DataSource
from lstm_lm.download import Log, Progress
from lstm_lm.evaluation import evaluate, validation_batch
from lstm_lm.losses import perplexity
from lstm_lm.memory import check_memory
from lstm_lm.model import LanguageModel
from lstm_lm.parallel import Group
from lstm_lm.rundir import BEST, check_free, default_out, newest, resolve
from lstm_lm.train import TrainState, fit, stop_reason


@dataclass
class Run:
    """What `fit` needs for one run directory: a fresh run, or one resumed from a checkpoint."""

    model: LanguageModel
    corpus: Corpus
    config: TrainConfig
    out: Path
    rng: np.random.Generator
    resume: checkpoint.Checkpoint | None = None
    group: Group | None = None
    init_from: dict | None = None  # a fine-tuned model's origin

    def stop_reason(self) -> str:
        """What would end the run before its first step ("" if it would train)."""
        st = TrainState(**self.resume.train_state) if self.resume is not None else TrainState()
        return stop_reason(st, self.config)

    def fit(self, on_event=None, should_stop=None) -> TrainState:
        return fit(
            self.model,
            self.corpus,
            self.config,
            run_dir=self.out,
            resume=self.resume,
            rng=self.rng,
            on_event=on_event,
            should_stop=should_stop,
            group=self.group,
            init_from=self.init_from,
        )


def new_run(
    settings: Settings,
    source: DataSource,
    out: str | Path | None = None,
    *,
    name: str | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
) -> Run:
    """Load the data, initialise the model from `settings.train.seed` and choose the run
    directory: `out`, or a fresh `runs/<name>` (default name: `ptb` or the data's name, with
    `-char` at char level). Refuses a directory that already holds a run."""
    out = Path(out) if out is not None else default_out(source, name)
    check_free(out, f"continue it with --resume {out}, or choose another --out")
    corpus = cache.load(source, out, log, progress, keep=False)
    tc = settings.train
    rng = np.random.default_rng(tc.seed)
    config = settings.model_config(len(corpus.vocab))
    check_memory(config, tc)
    order = (
        frequency_order(corpus.train, config.vocab_size) if config.softmax == "adaptive" else None
    )
    model = LanguageModel.init(config, rng, tc.dtype, order)
    return Run(model, corpus, tc, out, rng)


def resume_run(
    path: str | Path,
    changes: dict | None = None,
    out: str | Path | None = None,
    *,
    log: Log | None = None,
    progress: Progress | None = None,
    verify: bool = False,
) -> Run:
    """Continue a run with its own configuration and data, from a checkpoint file or from a
    run directory's newest checkpoint (after a crash best.npz can be ahead of last.npz).
    `changes` may set only the RESUMABLE fields. With `out` another directory, the run's
    best.npz is carried over, so that directory holds the whole run. `verify`: hash the data
    files against the run's token cache even where their sizes and times match."""
    changes = changes or {}
    fixed = sorted(set(changes) - set(RESUMABLE))
    if fixed:
        raise LMError(f"a resumed run keeps its configuration; cannot change {', '.join(fixed)}")
    path = newest(path) if Path(path).is_dir() else Path(path)
    ckpt = checkpoint.load(path)
    if "rng" not in ckpt.train_state:
        raise LMError(f"{path}: an exported model holds no training state; resume from the "
                      "run's last.npz or best.npz")  # fmt: skip
    tc = dataclasses.replace(ckpt.train_config, **changes)
    corpus = cache.trained_on(ckpt, path.parent, log, progress, keep=False, verify=verify)
    out = Path(out) if out is not None else path.parent
    if out.resolve() != path.parent.resolve():
        check_free(out)
        if (path.parent / BEST).exists():
            write_atomic(out / BEST, (path.parent / BEST).read_bytes())
    return Run(ckpt.model, corpus, tc, out, np.random.default_rng(tc.seed), ckpt)


# What a fine-tuned model keeps of its checkpoint's configuration: everything that shapes or
# initialises it. Its regularisation is training, the run's own (by default the checkpoint's).
STRUCTURE = (
    "cell",
    "layers",
    "hidden",
    "init_scale",
    "forget_bias",
    "chrono",
    "softmax",
    "cutoffs",
)


def init_run(
    path: str | Path,
    source: DataSource,
    model_changes: dict | None = None,
    train_changes: dict | None = None,
    out: str | Path | None = None,
    *,
    extend_vocab: bool = False,
    name: str | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
) -> Run:
    """Fine-tuning: a new run on new text that starts from a trained model (a checkpoint
    file or a run directory's best.npz), with its configuration and vocabulary. The
    regularisation (`model_changes`) and training settings (`train_changes`) default to the
    checkpoint's; the optimiser and schedule start afresh. Tokens the vocabulary lacks become
    <unk> where it has one; otherwise the run stops listing them, unless `extend_vocab`,
    which adds them (`extend_vocabulary`)."""
    model_changes, train_changes = model_changes or {}, train_changes or {}
    fixed = sorted(set(model_changes) & set(STRUCTURE))
    if fixed:
        raise LMError(f"the model comes from the checkpoint; cannot change {', '.join(fixed)}")
    path = resolve(path)
    ckpt = checkpoint.load(path)
    if source.level != ckpt.vocab.level:
        raise LMError(f"{path} is a {ckpt.vocab.level}-level model; its data is read at that level")
    out = Path(out) if out is not None else default_out(source, name)
    check_free(out)
    keep = {f.name for f in dataclasses.fields(TrainConfig)} - {"max_steps", "max_tokens",
                                                                 "max_minutes"}  # fmt: skip
    tc = TrainConfig(**{**{k: getattr(ckpt.train_config, k) for k in keep}, **train_changes})
    rng = np.random.default_rng(tc.seed)
    corpus = cache.load(source, out, log, progress, vocab=ckpt.vocab, keep=False)
    params = {k: a.astype(tc.dtype) for k, a in ckpt.model.params.items()}
    model = LanguageModel(dataclasses.replace(ckpt.model.config, **model_changes), params,
                          order=ckpt.model.output.arrays().get("order"))  # fmt: skip
    if corpus.unknown:
        if UNK in ckpt.vocab.stoi:
            corpus.notes.append(
                f"{sum(corpus.unknown.values()):,} tokens of {len(corpus.unknown):,} types are "
                f"not in the model's vocabulary and become {UNK}: {_listed(corpus.unknown)}"
            )
        elif not extend_vocab:
            raise LMError(
                f"{len(corpus.unknown):,} token types of the new text are not in the model's "
                f"vocabulary: {_listed(corpus.unknown)}; add them with --extend-vocab"
            )
        else:
            added = f"added {len(corpus.unknown):,} token types to the vocabulary: "
            added += _listed(corpus.unknown)
            vocab = ckpt.vocab.extended(corpus.unknown)
            model = extend_vocabulary(model, len(vocab), rng)
            corpus = cache.load(source, out, log, progress, vocab=vocab, keep=False)
            corpus.notes.append(added)
    check_memory(model.config, tc)
    nll, n = evaluate(model, corpus.valid, validation_batch(tc, len(corpus.valid)))
    corpus.notes.append(f"valid ppl before fine-tuning: {perplexity(nll / n):,.2f}")
    init_from = {"path": str(path.absolute()), "step": ckpt.train_state.get("step"),
                 "vocab_size": len(ckpt.vocab), "valid_loss": nll / n}  # fmt: skip
    return Run(model, corpus, tc, out, rng, init_from=init_from)


def _listed(counts: dict[str, int], most: int = 20) -> str:
    """Tokens with their counts, most frequent first: "'é' 12, 'ß' 3 ..."."""
    shown = ", ".join(f"{t!r} {n:,}" for t, n in list(counts.items())[:most])
    return shown + (" ..." if len(counts) > most else "")


def extend_vocabulary(model: LanguageModel, vocab_size: int, rng: np.random.Generator):
    """The model with token rows and output weights for ids V .. vocab_size - 1 added: the
    rows drawn as a new model's are; the output layer's new weights such that the old tokens'
    log-probabilities stay what they were, to the dtype's rounding, until training moves them
    (an adaptive softmax puts the new tokens in its last cluster; with --tied, E's new rows
    are zero, input and output)."""
    c, p = model.config, model.params
    n, s, G, dtype = vocab_size - c.vocab_size, c.init_scale, c.gate_columns, model.dtype
    output, order = model.output.extended(p, n)  # with --tied: the new words' rows of E too
    params = {**p, **output}
    if not c.tied:
        params["l0.W"] = np.concatenate([p["l0.W"], rng.uniform(-s, s, (n, G)).astype(dtype)])
    config = dataclasses.replace(c, vocab_size=vocab_size)
    return LanguageModel(config, params, order=order)
