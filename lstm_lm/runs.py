"""Planning and preparing a run directory for `train.fit`: a new run (data loaded, model
initialised), a resumed one (from its newest checkpoint, exactly where it stopped), or a
fine-tuned one (`--init-from`: a trained model on new text, its vocabulary kept or extended).

Every rule about which options a run takes lives here, once: `plan` decides them from the
options and the checkpoint's header (what `train --dry-run` shows), and `Plan.start` carries
the plan out with `new_run`, `resume_run` or `init_run`, which apply the same rules when
called from Python."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_lm import LMError, OptionError, cache, checkpoint, rundir
from lstm_lm.adaptive import frequency_order
from lstm_lm.atomic import write_atomic
from lstm_lm.config import MODEL_FIELDS, RESUMABLE, TRAIN_FIELDS, Settings, TrainConfig, resolve
from lstm_lm.data import UNK, Corpus, DataSource, windows_per_epoch
from lstm_lm.download import DEFAULT_DEST, PTB_SHA256, Log, Progress
from lstm_lm.evaluation import evaluate, validation_batch
from lstm_lm.losses import perplexity
from lstm_lm.memory import check_memory
from lstm_lm.model import LanguageModel
from lstm_lm.parallel import Group
from lstm_lm.rundir import BEST, check_free, default_out
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
    notes: list[str] = field(default_factory=list)  # what the start decided, for the user

    def stop_reason(self) -> str:
        """What would end the run before its first step ("" if it would train)."""
        st = TrainState(**self.resume.train_state) if self.resume is not None else TrainState()
        return stop_reason(st, self.config)

    def epochs_done(self) -> float:
        """Epochs the run has trained, as progress lines count them (0.60: 60% of the first)."""
        st = self.resume.train_state if self.resume is not None else {"epoch": 1, "window": 0}
        windows = windows_per_epoch(len(self.corpus.train), self.config.batch_size,
                                    self.config.bptt)  # fmt: skip
        return st["epoch"] - 1 + st["window"] / windows

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


# What a fine-tuned model keeps of its checkpoint's configuration: everything that shapes or
# initialises it. Its regularisation is training, the run's own (by default the checkpoint's).
STRUCTURE = ("cell", "layers", "hidden", "tied", "init_scale", "forget_bias", "chrono", "softmax",
             "cutoffs")  # fmt: skip
# What a fine-tuned run takes from its checkpoint and so cannot be given.
FINE_TUNE_FIXED = ("preset", "level", "max_vocab", "min_count", "vocab_size", *STRUCTURE)
PTB_TRAIN = next(iter(PTB_SHA256))  # ptb.train.txt: a --data directory of PTB's files
LIMITS = ("max_steps", "max_tokens", "max_minutes")  # a run's own, never carried over
DATA_OPTIONS = ("data", "train", "valid", "test", "max_vocab", "min_count", "vocab_size")
OWN_TEXT_MIN_COUNT = 2  # --min-count's default for your own text at word level (data_source)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_changes(options: dict) -> dict:
    """The settings given (not None) for a resumed run; OptionError naming any that is not
    RESUMABLE."""
    others = sorted(_flag(k) for k, v in options.items() if v is not None and k not in RESUMABLE)
    if others:
        allowed = ", ".join(_flag(k) for k in RESUMABLE)
        raise OptionError(
            f"--resume continues the saved configuration and data; only {allowed} may change "
            f"(got {', '.join(others)})"
        )
    return {k: v for k, v in options.items() if v is not None}


def lift_reached_limits(train_state: dict, tc: TrainConfig,
                        changes: dict) -> tuple[dict, list[str]]:  # fmt: skip
    """A resumed run goes on: a limit (--max-steps, --max-tokens, --max-minutes) that the run
    has already reached is lifted, unless given anew; the changes with the lifted ones set
    to None, and a line for each."""
    changes, notes = dict(changes), []
    st = TrainState(**train_state)
    while (reason := stop_reason(st, dataclasses.replace(tc, **changes))).startswith("max-"):
        name = reason.replace("-", "_")
        if name in changes:  # given anew, and reached all the same: nothing to do
            break
        notes.append(f"--{reason} {getattr(tc, name):g} was reached; going on without it "
                     f"(Ctrl-C stops and saves; --{reason} N sets a new limit for the whole "
                     "run)")  # fmt: skip
        changes[name] = None
    return changes, notes


def refuse_on_fine_tuning(options: dict) -> None:
    """OptionError naming the settings given (not None) that a fine-tuned run takes from its
    checkpoint."""
    given = sorted(_flag(k) for k in FINE_TUNE_FIXED if options.get(k) is not None)
    if given:
        raise OptionError(
            "--init-from takes the model, its vocabulary and its token level from CKPT; "
            f"cannot give {', '.join(given)} (data and training options apply)"
        )


def fine_tuned_config(tc: TrainConfig, changes: dict) -> TrainConfig:
    """A fine-tuned run's training config: the checkpoint's, but its limits, with `changes`."""
    kept = {k: getattr(tc, k) for k in TRAIN_FIELDS if k not in LIMITS}
    return TrainConfig(**{**kept, **changes})


def data_source(level: str, data=None, train=None, valid=None, test=None, max_vocab=None,
                min_count=None, vocab_size=None) -> DataSource:  # fmt: skip
    """The data options as a DataSource: PTB (fetched into dataset/ptb) unless given. The
    default --min-count: 2 for your own text at word level, so that the words seen once
    become <unk> and an unknown word at eval or score time gets a trained probability; 1
    for PTB (whose text has its <unk> already) and at char level."""
    ptb_dir = DEFAULT_DEST if data is None and train is None else None
    if min_count is None:
        ptb = ptb_dir is not None or (data is not None and (Path(data) / PTB_TRAIN).exists())
        min_count = OWN_TEXT_MIN_COUNT if level == "word" and not ptb else 1
    try:
        return DataSource(
            level, ptb_dir, data, train, valid, test, max_vocab, min_count, vocab_size
        )
    except LMError as e:
        raise OptionError(str(e)) from None


@dataclass
class Plan:
    """The run `train` would start, decided before any data is read or model built: its
    kind, every setting with where it comes from (`values`, `origins`: what --dry-run shows),
    its data and run directory."""

    kind: str  # "new", "resume" or "init"
    values: dict
    origins: dict  # "option", "default", "preset NAME", "the run (PATH)", "the model (PATH)"
    source: DataSource
    out: Path
    checkpoint: Path | None = None  # the one resumed or fine-tuned from
    settings: Settings | None = None  # a new run's
    name: str | None = None  # the preset a new run's default directory is named after
    changes: dict = field(default_factory=dict)  # a resumed run's; a fine-tuned one's training
    model_changes: dict = field(default_factory=dict)  # a fine-tuned run's regularisation

    def start(self, *, extend_vocab: bool = False, verify: bool = False, log: Log | None = None,
              progress: Progress | None = None) -> Run:  # fmt: skip
        """The run, prepared: data loaded, model built or read (see new_run, resume_run and
        init_run, which this calls)."""
        hooks = dict(log=log, progress=progress)
        if self.kind == "resume":
            return resume_run(self.checkpoint, self.changes, self.out, **hooks, verify=verify)
        if self.kind == "init":
            return init_run(self.checkpoint, self.source, self.model_changes, self.changes,
                            self.out, extend_vocab=extend_vocab, **hooks)  # fmt: skip
        return new_run(self.settings, self.source, self.out, name=self.name, **hooks)


def plan(options: dict, out: str | Path | None = None, resume: str | Path | None = None,
         init_from: str | Path | None = None) -> Plan:  # fmt: skip
    """The run that `options` describe (by name: "preset", "level", DATA_OPTIONS and the
    model's and training's fields; None where not given): new, resumed from `resume` (a run
    directory: its newest checkpoint) or fine-tuned from `init_from`. OptionError for options
    that do not go together; only the checkpoint's header is read."""
    options = dict(options)
    if resume is not None:
        changes = resume_changes(options)
        path = rundir.newest(resume) if Path(resume).is_dir() else Path(resume)
        header = checkpoint.header(path)
        tc = checkpoint.configs(path, header)[1]
        lifted, _ = lift_reached_limits(header["train_state"], tc, changes)
        values, origins = _from_checkpoint(path, lifted, f"the run ({path})")
        for k in set(lifted) - set(changes):
            origins[k] = f"lifted: the run ({path}) had reached it"
        source = DataSource.from_json(header["data"])
        p = Plan("resume", values, origins, source, Path(out or path.parent), path,
                 changes=changes)  # fmt: skip
    elif init_from is not None:
        refuse_on_fine_tuning(options)
        path = rundir.resolve(init_from)
        model_changes = {k: v for k, v in options.items() if v is not None and k in MODEL_FIELDS}
        changes = {k: v for k, v in options.items() if v is not None and k in TRAIN_FIELDS}
        values, origins = _from_checkpoint(path, {**model_changes, **changes},
                                           f"the model ({path})")  # fmt: skip
        for k in LIMITS:
            values[k] = changes.get(k)
        values["init_from"], origins["init_from"] = path, "option"
        where = {k: options.get(k) for k in ("data", "train", "valid", "test")}
        source = data_source(values["level"], **where)
        p = Plan("init", values, origins, source, Path(out or default_out(source)), path,
                 changes=changes, model_changes=model_changes)  # fmt: skip
    else:
        where = {k: options.pop(k, None) for k in DATA_OPTIONS}
        preset = options.pop("preset", None)
        try:
            settings = resolve(preset, options)
        except LMError as e:
            raise OptionError(str(e)) from None
        source = data_source(settings.level, **where)
        out_dir = Path(out or default_out(source, preset))
        p = Plan("new", settings.values(), dict(settings.origins), source, out_dir,
                 settings=settings, name=preset)  # fmt: skip
    if source.ptb_dir is not None:
        p.values["data"], p.origins["data"] = f"PTB in {source.ptb_dir}", "default"
    else:
        p.values["data"], p.origins["data"] = source.data_dir or source.train, "option"
    p.values["out"], p.origins["out"] = p.out, "option" if out is not None else "default"
    return p


def _from_checkpoint(path: Path, changes: dict, origin: str) -> tuple[dict, dict]:
    """The settings of the checkpoint at `path` with `changes`, and where each comes from."""
    config, tc, vocab = checkpoint.configs(path, checkpoint.header(path))
    model = {k: v for k, v in dataclasses.asdict(config).items() if k != "vocab_size"}
    values = {"level": vocab.level, **model, **dataclasses.asdict(tc), **changes}
    return values, {k: "option" if k in changes else origin for k in values}


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
    changes = resume_changes(changes or {})
    path = rundir.newest(path) if Path(path).is_dir() else Path(path)
    ckpt = checkpoint.load(path)
    if "rng" not in ckpt.train_state:
        raise LMError(f"{path}: an exported model holds no training state; resume from the "
                      "run's last.npz or best.npz")  # fmt: skip
    changes, notes = lift_reached_limits(ckpt.train_state, ckpt.train_config, changes)
    tc = dataclasses.replace(ckpt.train_config, **changes)
    corpus = cache.trained_on(ckpt, path.parent, log, progress, keep=False, verify=verify)
    out = Path(out) if out is not None else path.parent
    if out.resolve() != path.parent.resolve():
        check_free(out)
        if (path.parent / BEST).exists():
            write_atomic(out / BEST, (path.parent / BEST).read_bytes())
    return Run(ckpt.model, corpus, tc, out, np.random.default_rng(tc.seed), ckpt, notes=notes)


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
    checkpoint's; the optimiser and schedule start afresh. Tokens the vocabulary lacks are
    added with `extend_vocab` (`extend_vocabulary`); else they become <unk> where it has one,
    and where not the run stops listing them."""
    model_changes, train_changes = model_changes or {}, train_changes or {}
    refuse_on_fine_tuning(model_changes)
    path = rundir.resolve(path)
    ckpt = checkpoint.load(path)
    if source.level != ckpt.vocab.level:
        raise LMError(f"{path} is a {ckpt.vocab.level}-level model; its data is read at that level")
    out = Path(out) if out is not None else default_out(source, name)
    check_free(out)
    tc = fine_tuned_config(ckpt.train_config, train_changes)
    rng = np.random.default_rng(tc.seed)
    corpus = cache.load(source, out, log, progress, vocab=ckpt.vocab, keep=False)
    params = {k: a.astype(tc.dtype) for k, a in ckpt.model.params.items()}
    model = LanguageModel(dataclasses.replace(ckpt.model.config, **model_changes), params,
                          order=ckpt.model.output.arrays().get("order"))  # fmt: skip
    if corpus.unknown:
        if extend_vocab:  # asked for: added, even where <unk> could stand for them
            added = f"added {len(corpus.unknown):,} token types to the vocabulary: "
            added += _listed(corpus.unknown)
            vocab = ckpt.vocab.extended(corpus.unknown)
            model = extend_vocabulary(model, len(vocab), rng)
            corpus = cache.load(source, out, log, progress, vocab=vocab, keep=False)
            corpus.notes.append(added)
        elif UNK in ckpt.vocab.stoi:
            corpus.notes.append(
                f"{sum(corpus.unknown.values()):,} tokens of {len(corpus.unknown):,} types are "
                f"not in the model's vocabulary and become {UNK}: {_listed(corpus.unknown)}"
            )
        else:
            raise LMError(
                f"{len(corpus.unknown):,} token types of the new text are not in the model's "
                f"vocabulary: {_listed(corpus.unknown)}; add them with --extend-vocab"
            )
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
