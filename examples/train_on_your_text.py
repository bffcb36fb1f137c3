"""Character-level training on any text file, then sampling from a seed text.

Uses the library the way `lstm-lm train --level char --train FILE` does, in a few lines:
load the text (the last 10% becomes the validation split), build a model, fit it with a
callback that prints each evaluation, then prime with a seed and sample.

    python examples/train_on_your_text.py [FILE] [--minutes 1.5] [--seed-text "The "]

Without FILE it trains on this project's docs/training.md.
"""

import argparse
import math
from pathlib import Path

import numpy as np

from lstm_lm.config import ModelConfig, TrainConfig
from lstm_lm.data import load_corpus
from lstm_lm.model import LanguageModel
from lstm_lm.sampling import generate
from lstm_lm.train import fit


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "file", nargs="?", default=str(Path(__file__).resolve().parents[1] / "docs" / "training.md")
    )
    ap.add_argument("--minutes", type=float, default=1.5, help="training budget")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed-text", default="The ")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    corpus = load_corpus("char", train=a.file)
    for note in corpus.notes:
        print(note)
    print(f"{len(corpus.vocab)} characters, {len(corpus.train):,} training tokens")
    rng = np.random.default_rng(a.seed)
    model = LanguageModel.init(
        ModelConfig(vocab_size=len(corpus.vocab), hidden=a.hidden, layers=1), rng
    )
    # Adam suits small corpora; max_minutes ends the run when the budget is spent.
    tc = TrainConfig(
        batch_size=16,
        bptt=50,
        epochs=1000,
        optimizer="adam",
        lr=3e-3,
        lr_decay=1.0,
        eval_every=100,
        max_minutes=a.minutes,
        seed=a.seed,
    )

    def show(event):
        if event.kind == "eval":
            m = event.metrics
            print(
                f"step {m['step']:5d}  train {m['train_loss'] / math.log(2):.3f} bpc  "
                f"valid {m['valid_bpc']:.3f} bpc  {m['tokens_per_s']:,.0f} tok/s"
            )

    fit(model, corpus, tc, rng=rng, on_event=show)

    seed_ids, unknown = corpus.vocab.encode(a.seed_text)
    text = corpus.vocab.decode(list(generate(model, seed_ids, 400, rng, temperature=0.8)))
    print(f"\n--- sample (seed {a.seed_text!r}, temperature 0.8) ---\n{a.seed_text}{text}")


if __name__ == "__main__":
    main()
