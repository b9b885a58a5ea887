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

``--batches FILE`` times prodcat's default model instead — the SSL-GAN at its default
hyperparameters, built for a run's inputs and classes — on that run's training batches, saved
as arrays by ``--save-batches FILE --run-id RUN`` (``benchmarks/saved_batches.py``: the
batches the trainer's input pipeline makes, sparse TF-IDF and rule labels included, so a
machine without TensorFlow can be fed them). It prints TensorFlow's rows/s (its
``train_step`` as ``fit`` runs it, the batches in memory) and, with ``--backend jax``, JAX's
beside it, each with the GPUs' mean utilisation where ``nvidia-smi`` is. ``--profile DIR``
writes a TensorFlow profile of that step to ``DIR`` and prints where its time goes.

    .venvs/ml/bin/python -m benchmarks.trainer_throughput [--steps 200] [--backend jax]
    .venvs/ml/bin/python -m benchmarks.trainer_throughput --save-batches FILE --run-id RUN
        [--count 60]
    .venvs/ml/bin/python -m benchmarks.trainer_throughput --batches FILE [--backend jax]
        [--steps 200]
    .venvs/ml/bin/python -m benchmarks.trainer_throughput --batches FILE --profile DIR
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
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
    seconds, _ = jax_seconds(model, batches, steps)
    return steps * BATCH / seconds, ", ".join(str(d) for d in jax.devices())


def jax_seconds(model, batches: list, steps: int) -> tuple[float, dict]:
    """``(seconds, logs)`` of ``steps`` jitted ``SSLGAN.jax_train_step``s over ``batches``
    in turn, after a warm-up that pays for the tracing and compiling."""
    import jax

    step, state = jax.jit(model.jax_train_step()), model.jax_state()
    key = jax.random.PRNGKey(0)
    for i in range(WARM_UP_STEPS):
        key, sub = jax.random.split(key)
        state, _ = step(state, batches[i % len(batches)], sub)
    jax.block_until_ready(state)
    started = time.perf_counter()
    for i in range(steps):
        key, sub = jax.random.split(key)
        state, logs = step(state, batches[i % len(batches)], sub)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    model.assign_jax_state(state)
    return seconds, {name: float(value) for name, value in logs.items()}


def tensorflow_steps(step, batches: list, steps: int) -> dict:
    """Run ``steps`` of a ``tf.function`` train ``step`` over ``batches`` in turn; the last
    step's logs (reading them waits for it)."""
    for i in range(steps):
        logs = step(batches[i % len(batches)])
    return {name: float(value) for name, value in logs.items()}


def warm_tensorflow_step(model, batches: list):
    """TensorFlow's ``SSLGAN.train_step`` as a ``tf.function`` (as ``fit`` runs it), traced
    and warmed up on ``batches``."""
    import tensorflow as tf

    step = tf.function(model.train_step)
    tensorflow_steps(step, batches, WARM_UP_STEPS)
    return step


def tensorflow_seconds(model, batches: list, steps: int) -> tuple[float, dict]:
    """``(seconds, logs)`` of ``steps`` of TensorFlow's ``SSLGAN.train_step`` over in-memory
    ``batches`` in turn, after a warm-up."""
    step = warm_tensorflow_step(model, batches)
    started = time.perf_counter()
    logs = tensorflow_steps(step, batches, steps)
    return time.perf_counter() - started, logs


# the parts of the SSL-GAN's step, by the names of their ops, first match wins
STEP_PARTS = (("rule head and its loss", r"rule_based"), ("optimizers", r"adam"),
              ("dropout and noise draws", r"[Ss]tateless|random"), ("encoder", r"encoder"),
              ("generator", r"generator"), ("discriminator", r"discriminator"))
PROFILED_STEPS = 20


def profile(model, batches: list, target: str) -> dict[str, float]:
    """Milliseconds of op thread time a step per part of the step (``STEP_PARTS``, the rest
    "other"), from a TensorFlow profile of ``PROFILED_STEPS`` in-memory steps written to
    ``target`` (TensorBoard's profile plugin reads it)."""
    import glob
    import re

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    step = warm_tensorflow_step(model, batches)
    tf.profiler.experimental.start(target)
    tensorflow_steps(step, batches, PROFILED_STEPS)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(max(glob.glob(f"{target}/**/*.xplane.pb", recursive=True)), "rb") as f:
        space.ParseFromString(f.read())
    parts: dict[str, float] = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # an op's own events are "name:type"; the executor's and Python's wrap them
                if ":" not in name or name.startswith(("Executor", "EagerLocalExecute")) \
                        or line.name == "python":
                    continue
                part = next((p for p, pattern in STEP_PARTS if re.search(pattern, name)),
                            "other")
                parts[part] = parts.get(part, 0.0) + event.duration_ps / 1e9 / PROFILED_STEPS
    return dict(sorted(parts.items(), key=lambda item: -item[1]))


class Utilisation:
    """The GPUs' mean utilisation (%) while it is open, sampled by ``nvidia-smi`` every
    200 ms; None where there is no ``nvidia-smi``."""

    def __enter__(self):
        self.samples: list[float] = []
        self.process = None
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.terminate()
            output, _ = self.process.communicate()
            self.samples = [float(line) for line in output.split() if line.strip().isdigit()]

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def saved_model(source: str):
    """``(metadata, saved batches, the default SSL-GAN built for them)``, seeded."""
    import keras

    from benchmarks import saved_batches

    meta, raw = saved_batches.load(source)
    keras.utils.set_random_seed(0)
    return meta, raw, saved_batches.build(meta)


def saved_batches_rate(source: str, backend: str, steps: int) -> dict:
    """The default SSL-GAN's train step on a run's saved batches (``benchmarks.saved_batches``):
    rows/s on this process's Keras backend, the devices, the GPUs' mean utilisation."""
    from benchmarks import saved_batches

    meta, raw, model = saved_model(source)
    if backend == "jax":
        import jax

        batches = [jax.device_put(saved_batches.jax_batch(b, meta)) for b in raw]
        devices = ", ".join(str(d) for d in jax.devices())
        timer = jax_seconds
    else:
        import tensorflow as tf

        batches = [saved_batches.tensorflow_batch(b, meta) for b in raw]
        devices = ", ".join(d.device_type for d in tf.config.list_physical_devices())
        timer = tensorflow_seconds
    with Utilisation() as utilisation:
        seconds, logs = timer(model, batches, steps)
    return {"backend": backend, "rows_per_second": steps * meta["batch_size"] / seconds,
            "devices": devices, "gpu_utilisation": utilisation.mean,
            "d_loss": logs["d_loss"], "batch_size": meta["batch_size"]}


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
    parser.add_argument("--batches", metavar="FILE",
                        help="time the default model on a run's saved batches (--save-batches)")
    parser.add_argument("--save-batches", metavar="FILE",
                        help="save --count training batches of run --run-id to FILE (.npz)")
    parser.add_argument("--run-id", help="the run whose TFRecords --save-batches reads")
    parser.add_argument("--count", type=int, default=60, help="batches --save-batches saves")
    parser.add_argument("--profile", metavar="DIR",
                        help="with --batches: write a TensorFlow profile of the step to DIR and "
                             "print where its time goes")
    parser.add_argument("--jax-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.count < 1:
        parser.error("--steps and --count must be positive")
    if args.save_batches:
        if not args.run_id:
            parser.error("--save-batches needs --run-id")
        save(args.save_batches, args.run_id, args.count)
        return
    if args.batches:
        if not os.path.isfile(args.batches):
            parser.error(f"--batches {args.batches}: no such file (make one with --save-batches)")
        if args.profile:
            profile_saved_batches(args.batches, args.profile)
            return
        time_saved_batches(args)
        return
    if args.profile:
        parser.error("--profile needs --batches")
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


def save(target: str, run_id: str, count: int) -> None:
    from benchmarks import saved_batches
    from shared_config.paths import InvalidId, RunPaths
    from trainer.hparams import HParams

    try:
        paths = RunPaths.for_run(run_id)
    except InvalidId as err:
        raise SystemExit(f"--run-id: {err}") from None
    meta = saved_batches.save(paths, HParams(), count, target)
    print(f"saved {meta['batches']} batches of {meta['batch_size']} rows of run {run_id} "
          f"({meta['classes']['exclusive']} classes, {meta['classes']['rule_based']:,} rule "
          f"categories) to {target}", flush=True)


RESULT = "RESULT "


def profile_saved_batches(source: str, target: str) -> None:
    from benchmarks import saved_batches

    meta, raw, model = saved_model(source)
    parts = profile(model, [saved_batches.tensorflow_batch(b, meta) for b in raw], target)
    total = sum(parts.values())
    print(f"the default SSL-GAN's TensorFlow step on {source}, {PROFILED_STEPS} steps profiled "
          f"(profile: {target}): {total:.1f} ms of op thread time a step")
    for part, milliseconds in parts.items():
        print(f"  {part:<26}{milliseconds:>7.2f} ms {milliseconds / total:>6.1%}")


def time_saved_batches(args) -> None:
    """The default model's train step on saved batches: with ``--backend jax``, JAX's (in a
    process of its own) beside TensorFlow's on this machine when it has TensorFlow."""
    if args.jax_only:  # the JAX process: Keras on JAX
        print(RESULT + json.dumps(saved_batches_rate(args.batches, "jax", args.steps)),
              flush=True)
        return
    results = []
    if args.backend == "jax":
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.trainer_throughput", "--batches", args.batches,
             "--backend", "jax", "--steps", str(args.steps), "--jax-only"],
            env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
            check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"the JAX run failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len(RESULT):]))
    if args.backend == "tensorflow" or importlib.util.find_spec("tensorflow") is not None:
        results.append(saved_batches_rate(args.batches, "tensorflow", args.steps))
    print(f"the default SSL-GAN on {args.batches}: {args.steps} timed steps of "
          f"{results[0]['batch_size']} rows")
    print(f"{'backend':<12}{'rows/s':>10}{'vs TensorFlow':>15}{'GPU use':>9}  devices")
    baseline = results[-1]["rows_per_second"] if results[-1]["backend"] == "tensorflow" else None
    for result in results:
        ratio = f"{result['rows_per_second'] / baseline:>14.2f}x" if baseline else f"{'-':>15}"
        use = result["gpu_utilisation"]
        print(f"{result['backend']:<12}{result['rows_per_second']:>10,.0f}{ratio}"
              f"{'-' if use is None else f'{use:.0f}%':>9}  {result['devices']}", flush=True)


if __name__ == "__main__":
    main()
