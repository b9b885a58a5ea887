"""SSL-GAN training throughput under each device setting, against float32 without XLA.

The network and batch of the label-efficiency benchmark (2,000 TF-IDF inputs,
one hidden layer of 256, batches of 128) on random rows, so it needs no data:
rows per second for float32 / float32 + XLA / mixed_float16 + XLA /
mixed_bfloat16 + XLA, on whatever devices this machine has (several GPUs: the
MirroredStrategy ``--precision``/``--xla`` would pick), timed after a warm-up
that pays for tracing and compiling.

    .venvs/ml/bin/python -m benchmarks.trainer_throughput [--steps 200]
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=UserWarning, module="keras")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer import accelerators  # noqa: E402
from trainer.hparams import HParams  # noqa: E402
from trainer.model import ModelInput  # noqa: E402
from trainer.ssl_gan import build_ssl_gan  # noqa: E402

INPUTS, CLASSES, BATCH, WARM_UP_STEPS = 2000, 20, 128, 20
SETTINGS = (("float32", "off"), ("float32", "on"), ("mixed_float16", "on"), ("mixed_bfloat16", "on"))


def rows(n: int = 4096):
    rng = np.random.default_rng(0)
    return tf.data.Dataset.from_tensor_slices((
        {"x": rng.random((n, INPUTS), "float32")},
        {"exclusive": rng.integers(0, CLASSES, n),
         "rule_based": (rng.random((n, 10)) < 0.1).astype("float32")},
        {"exclusive": (rng.random(n) < 0.1).astype("float32"),
         "rule_based": np.ones(n, "float32")})).repeat().batch(BATCH).prefetch(4)


def rows_per_second(precision: str, xla: str, steps: int) -> tuple[float, dict]:
    chosen = accelerators.choose(precision, xla)
    keras.utils.set_random_seed(0)
    with chosen.strategy.scope():
        model = build_ssl_gan(HParams(hidden_units=(256,), dropout=0.3),
                              [ModelInput("x", "vector", INPUTS)],
                              {"exclusive": CLASSES, "rule_based": 10}, chosen)
    data = rows()
    model.fit(data, steps_per_epoch=WARM_UP_STEPS, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * BATCH / (time.perf_counter() - started), chosen.describe()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per setting")
    args = parser.parse_args(argv)
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(f"devices: {', '.join(devices)}; {args.steps} timed steps of {BATCH} rows", flush=True)
    print(f"{'precision':<16}{'xla':<6}{'replicas':>9}{'rows/s':>10}{'vs float32':>12}")
    baseline = None
    for precision, xla in SETTINGS:
        speed, described = rows_per_second(precision, xla, args.steps)
        baseline = baseline or speed
        print(f"{precision:<16}{xla:<6}{described['replicas']:>9}{speed:>10,.0f}"
              f"{speed / baseline:>11.2f}x", flush=True)
    keras.mixed_precision.set_dtype_policy("float32")


if __name__ == "__main__":
    main()
