"""The trainer's command-line entry point, the same locally, in Airflow and in a GPU container.

    python -m trainer.controller train             --run-id R [hyperparameters]
    python -m trainer.controller evaluate          --run-id R [--split valid|test]
    python -m trainer.controller predict           --run-id R
    python -m trainer.controller train_and_predict --run-id R
    python -m trainer.controller export            --run-id R

Everything is found through the shared path config: TFRecords and the transform
function written by the Beam job, checkpoints under ``checkpoints/{hparams_id}/``
(with ``hparams.json`` beside the model), predictions under ``predictions/``.
Commands after ``train`` find the model from the same hyperparameter flags, or
from ``--hparams-id``.
"""
from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from shared_config.cli import finish_stage, run_paths, setup_logging  # noqa: E402
from shared_config.paths import OBJECTIVES, InvalidId, validate_id  # noqa: E402
from trainer.hparams import MODEL_TYPES, HParams  # noqa: E402

log = logging.getLogger("prodcat.trainer")
COMMANDS = ("train", "evaluate", "predict", "train_and_predict", "export")


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = HParams()
    parser = argparse.ArgumentParser(prog="python -m trainer.controller", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--hparams-id", help="use this trained model instead of the flags'")
    parser.add_argument("--model-type", choices=MODEL_TYPES, default=defaults.model_type)
    parser.add_argument("--objectives", type=_csv(str), default=defaults.objectives,
                        help=f"comma-separated, from {','.join(OBJECTIVES)}")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--hidden-units", type=_csv(int), default=defaults.hidden_units)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--rule-threshold", type=float, default=defaults.rule_threshold)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--split", choices=("valid", "test"), default="valid",
                        help="the split evaluate reports on")
    return parser


def hparams_from_args(args) -> HParams:
    return HParams(model_type=args.model_type, objectives=args.objectives, epochs=args.epochs,
                   batch_size=args.batch_size, learning_rate=args.learning_rate,
                   hidden_units=args.hidden_units, dropout=args.dropout,
                   rule_threshold=args.rule_threshold, seed=args.seed)


def main(argv=None) -> None:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    try:
        hparams = hparams_from_args(args)
        if args.hparams_id:
            validate_id(args.hparams_id, "hparams_id")
    except (InvalidId, ValueError) as err:
        parser.error(str(err))

    from trainer import task  # TensorFlow loads only once the arguments are good

    if args.command in ("train", "train_and_predict"):
        finish_stage(paths, "train", task.train(paths, hparams))
    hparams_id = args.hparams_id or hparams.hparams_id
    if args.command == "evaluate":
        finish_stage(paths, f"evaluate_{args.split}", task.evaluate(paths, hparams_id, args.split))
    if args.command in ("predict", "train_and_predict"):
        finish_stage(paths, "predict", task.predict(paths, hparams_id))
    if args.command == "export":
        finish_stage(paths, "export", task.export(paths, hparams_id))


if __name__ == "__main__":
    main()
