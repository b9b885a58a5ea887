"""SSL-GAN training throughput under each device setting, against float32 without XLA.

The network and batch of the label-efficiency benchmark (2,000 TF-IDF inputs,
one hidden layer of 256, batches of 128) on random rows, so it needs no data:
rows per second for float32 / float32 + XLA / mixed_float16 + XLA /
mixed_bfloat16 + XLA, on whatever devices this machine has (several GPUs: the
MirroredStrategy ``--precision``/``--xla`` would pick), timed after a warm-up
that pays for tracing and compiling.

``--backend jax`` trains the same model with the same losses on Keras' JAX backend
(``SSLGAN.jax_train_step``, jitted), fed from in-memory arrays, with no TensorFlow
imported: the path for GPU machines that have JAX and no TensorFlow. It prints
JAX's rows/s beside TensorFlow's float32 on this machine when TensorFlow is there.

    .venvs/ml/bin/python -m benchmarks.trainer_throughput [--steps 200] [--backend jax]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import warnings

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=UserWarning, module="keras")

INPUTS, CLASSES, BATCH, WARM_UP_STEPS = 2000, 20, 128, 20
SETTINGS = (("float32", "off"), ("float32", "on"), ("mixed_float16", "on"), ("mixed_bfloat16", "on"))


def arrays(n: int = 4096):
    """Random rows shaped like the label-efficiency benchmark's: inputs, targets, weights."""
    rng = np.random.default_rng(0)
    return ({"x": rng.random((n, INPUTS), "float32")},
            {"exclusive": rng.integers(0, CLASSES, n),
             "rule_based": (rng.random((n, 10)) < 0.1).astype("float32")},
            {"exclusive": (rng.random(n) < 0.1).astype("float32"),
             "rule_based": np.ones(n, "float32")})


def build(accelerator=None):
    from trainer.hparams import HParams
    from trainer.model import ModelInput
    from trainer.ssl_gan import build_ssl_gan

    return build_ssl_gan(HParams(hidden_units=(256,), dropout=0.3),
                         [ModelInput("x", "vector", INPUTS)],
                         {"exclusive": CLASSES, "rule_based": 10}, accelerator)


def rows(n: int = 4096):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays(n)).repeat().batch(BATCH).prefetch(4)


def jax_rows_per_second(steps: int) -> tuple[float, str]:
    """The SSL-GAN's jitted JAX train step over in-memory batches (KERAS_BACKEND=jax)."""
    import jax
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    inputs, targets, weights = arrays()
    batches = [jax.device_put(({k: v[i:i + BATCH] for k, v in inputs.items()},
                               {k: v[i:i + BATCH] for k, v in targets.items()},
                               {k: v[i:i + BATCH] for k, v in weights.items()}))
               for i in range(0, len(inputs["x"]) - BATCH + 1, BATCH)]
    step, state = jax.jit(model.jax_train_step()), model.jax_state()
    key = jax.random.PRNGKey(0)
    for i in range(WARM_UP_STEPS):
        key, sub = jax.random.split(key)
        state, _ = step(state, batches[i % len(batches)], sub)
    jax.block_until_ready(state)
    started = time.perf_counter()
    for i in range(steps):
        key, sub = jax.random.split(key)
        state, _ = step(state, batches[i % len(batches)], sub)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    model.assign_jax_state(state)
    return steps * BATCH / seconds, ", ".join(str(d) for d in jax.devices())


def rows_per_second(precision: str, xla: str, steps: int) -> tuple[float, dict]:
    import keras

    from trainer import accelerators

    chosen = accelerators.choose(precision, xla)
    keras.utils.set_random_seed(0)
    with chosen.strategy.scope():
        model = build(chosen)
    data = rows()
    model.fit(data, steps_per_epoch=WARM_UP_STEPS, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * BATCH / (time.perf_counter() - started), chosen.describe()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per setting")
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--jax-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backend == "jax":
        if os.environ.get("KERAS_BACKEND") != "jax":  # Keras picks its backend at import
            command = [sys.executable, "-m", "benchmarks.trainer_throughput", "--backend", "jax",
                       "--steps", str(args.steps), "--jax-only"]
            subprocess.run(command, env={**os.environ, "KERAS_BACKEND": "jax"}, check=True)
            if importlib.util.find_spec("tensorflow") is not None:
                speed, _ = rows_per_second("float32", "off", args.steps)
                print(f"{'tensorflow float32 (same machine)':<40}{speed:>10,.0f}")
            return
        speed, devices = jax_rows_per_second(args.steps)
        print(f"jax devices: {devices}; {args.steps} timed steps of {BATCH} rows")
        print(f"{'jax float32 (jitted SSLGAN.jax_train_step)':<40}{speed:>10,.0f} rows/s", flush=True)
        return
    import keras
    import tensorflow as tf

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
