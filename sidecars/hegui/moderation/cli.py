"""`hegui moderation train`: a provider's labelled JSONL in, a new version of the `classifier`
model in a Triton model repository out (Art.4; GB/T 45654-2025 asks for a classification model
covering the 31 risks of Appendix A).

torch (the `ml` extra) is imported only when training runs; `hegui` names the extra when it is
missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hegui.moderation.classifier import RISKS, TEXT_MODEL, export_text, read_examples


def add_parser(commands: Any) -> None:
    moderation = commands.add_parser(
        "moderation", help="moderation models: train the classifier over the 31 risks (Art.4)")
    sub = moderation.add_subparsers(dest="moderation_command", required=True)
    fit = sub.add_parser(
        "train", help="train the text classifier over the 31 risks on labelled JSONL and write "
                      "it as the next version of a Triton model repository's classifier model")
    fit.add_argument("--data", type=Path, required=True,
                     help='JSONL, one {"text": ..., "categories": [risk, ...]} a line '
                          "([] for clean text)")
    fit.add_argument("--out", type=Path, required=True,
                     help="the Triton model repository (created if missing); writes "
                          "OUT/NAME/config.pbtxt and OUT/NAME/<next version>/")
    fit.add_argument("--name", default=TEXT_MODEL, help="the Triton model's name")
    fit.add_argument("--version", type=int, default=None,
                     help="the version to write (default: one more than the newest)")
    fit.add_argument("--epochs", type=int, default=60)
    fit.add_argument("--buckets", type=int, default=1 << 14,
                     help="hashed n-gram buckets (the embedding's rows)")
    fit.add_argument("--max-len", type=int, default=512, help="n-grams read per text")
    fit.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    try:
        examples = read_examples(args.data)
        trained = export_text(examples, args.out, name=args.name, version=args.version,
                              epochs=args.epochs, buckets=args.buckets, max_len=args.max_len)
    except ValueError as error:
        print(f"hegui moderation train: {error}", file=sys.stderr)
        return 2
    learned = [r for r in RISKS if trained.examples.get(r)]
    print(f"{trained.directory}: {len(examples)} examples; scores the {len(RISKS)} risks, "
          f"learned from examples of {len(learned)}: "
          + ", ".join(f"{r} ({trained.examples[r]})" for r in learned))
    if trained.unlearned:
        # Not an error (a provider may start with some risks), but the model cannot find them.
        print(f"warning: no example of {len(trained.unlearned)} risk(s), which this model "
              f"scores near 0: {', '.join(trained.unlearned)}", file=sys.stderr)
    return 0
