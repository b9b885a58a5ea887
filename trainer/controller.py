"""The trainer's command-line entry point, the same locally, in Airflow and in a GPU container.

    python -m trainer.controller train             --run-id R [hyperparameters]
    python -m trainer.controller evaluate          --run-id R [--split valid|test]
    python -m trainer.controller predict           --run-id R
    python -m trainer.controller train_and_predict --run-id R
    python -m trainer.controller export            --run-id R
    python -m trainer.controller embed             --run-id R [--embed-epochs 20]

Everything is found through the shared path config: TFRecords and the transform
function written by the Beam job, checkpoints under ``checkpoints/{hparams_id}/``
(with ``hparams.json`` beside the model), predictions under ``predictions/``, image embeddings under ``embeddings/``
(``trainer/embed.py``).
Commands after ``train`` find the model from the same hyperparameter flags, or
from ``--hparams-id``.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import InvalidId, validate_id
from trainer.accelerators import PRECISIONS, XLA_CHOICES
from trainer.hparams import (
    ENCODER_PRETRAININGS,
    EXCLUSIVE_LOSSES,
    GAN_HEADS,
    MODEL_TYPES,
    RULE_GAN_SIGNALS,
    SCHEDULES,
    SELF_TRAINING_EPOCHS,
    SELF_TRAINING_RULES,
    HParams,
)

log = logging.getLogger("prodcat.trainer")
COMMANDS = ("train", "evaluate", "predict", "train_and_predict", "export", "embed")


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
    return parse


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not true or false: {text!r}")


CHOICES = {"model_type": MODEL_TYPES, "schedule": SCHEDULES, "rule_gan_signal": RULE_GAN_SIGNALS,
           "exclusive_loss": EXCLUSIVE_LOSSES, "gan_head": GAN_HEADS,
           "self_training_epochs": SELF_TRAINING_EPOCHS, "self_training_rules": SELF_TRAINING_RULES,
           "encoder_pretraining": ENCODER_PRETRAININGS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.controller", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--hparams-id", help="use this trained model instead of the flags'")
    parser.add_argument("--split", choices=("valid", "test"), default="valid",
                        help="the split evaluate reports on")
    parser.add_argument("--role", choices=("model", "baseline"), default="model",
                        help="baseline: a model trained for comparison; its figures are kept "
                             "as baseline_* in the run's stats")
    devices = parser.add_argument_group("devices (how, not what: not part of the hparams_id)")
    devices.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="auto: mixed_bfloat16 on Ampere+ GPUs, mixed_float16 on older GPUs, "
                              "float32 on CPU")
    devices.add_argument("--xla", choices=XLA_CHOICES, default="auto",
                         help="XLA-compile the train step (auto: on GPU only)")
    embedding = parser.add_argument_group("embed: the image tower (trainer/embed.py)")
    embedding.add_argument("--embed-epochs", type=int, default=20, help="(default: 20)")
    embedding.add_argument("--embed-dim", type=int, default=64, help="(default: 64)")
    embedding.add_argument("--embed-labels", choices=("auto", "exclusive", "rule_based"),
                           default="auto", help="the labels the tower learns from (default: "
                                                "auto, whichever labels more images)")
    embedding.add_argument("--embed-flip", type=_bool, default=True,
                           help="average each image's and its mirror image's vectors "
                                "(default: true)")
    hyper = parser.add_argument_group("hyperparameters (defaults in trainer/hparams.py)")
    for field in dataclasses.fields(HParams):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, tuple):
            kind = int if default and isinstance(default[0], int) else str
            hyper.add_argument(flag, type=_csv(kind), default=default,
                               help=f"comma-separated (default: {','.join(map(str, default))})")
        else:
            hyper.add_argument(flag, type=_bool if isinstance(default, bool) else type(default),
                               default=default,
                               choices=CHOICES.get(field.name), help=f"(default: {default})")
    return parser


def hparams_from_args(args) -> HParams:
    return HParams(**{field.name: getattr(args, field.name) for field in dataclasses.fields(HParams)})


def main(argv=None) -> None:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    try:
        hparams = hparams_from_args(args)
        if args.hparams_id:
            validate_id(args.hparams_id, "hparams_id")
        if args.embed_epochs < 1 or not 2 <= args.embed_dim <= 1024:
            raise ValueError("--embed-epochs must be at least 1 and --embed-dim 2..1024")
    except (InvalidId, ValueError) as err:
        parser.error(str(err))

    from trainer import accelerators, task  # TensorFlow loads only once the arguments are good

    prefix = "baseline_" if args.role == "baseline" else ""
    if args.command in ("train", "train_and_predict"):
        accelerator = accelerators.choose(args.precision, args.xla)
        finish_stage(paths, f"{prefix}train", task.train(paths, hparams, accelerator, args.role))
    hparams_id = args.hparams_id or hparams.hparams_id
    if args.command == "evaluate":
        finish_stage(paths, f"{prefix}evaluate_{args.split}",
                     task.evaluate(paths, hparams_id, args.split, args.role))
    if args.command in ("predict", "train_and_predict"):
        finish_stage(paths, "predict", task.predict(paths, hparams_id, args.role))
    if args.command == "export":
        finish_stage(paths, "export", task.export(paths, hparams_id, args.role))
    if args.command == "embed":
        from trainer import embed

        finish_stage(paths, "embed", embed.embed(
            paths, task.vocabularies(paths), args.embed_epochs, args.embed_dim,
            args.embed_labels, args.embed_flip, hparams.seed))


if __name__ == "__main__":
    main()
