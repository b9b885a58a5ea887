"""A run's training batches saved as arrays: the same batches the input pipeline makes, for
either backend's train step, and the throughput benchmark that times the default model on them."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from benchmarks import saved_batches
from tests.ml.test_trainer import preprocessed_run
from trainer import data, task, training
from trainer.hparams import HParams


def dense(value) -> np.ndarray:
    return tf.sparse.to_dense(value).numpy() if isinstance(value, tf.SparseTensor) \
        else np.asarray(value)


def test_saved_batches_are_the_input_pipelines_for_both_backends(tmp_path, monkeypatch):
    paths, _ = preprocessed_run(tmp_path, monkeypatch, 300, 5, 0.3)
    hparams = HParams(batch_size=32)
    meta = saved_batches.save(paths, hparams, 4, str(tmp_path / "batches.npz"))
    loaded_meta, loaded = saved_batches.load(str(tmp_path / "batches.npz"))
    assert loaded_meta == meta and len(loaded) == 4
    vocabs = task.vocabularies(paths)
    assert meta["classes"]["rule_based"] == len(vocabs.labels("rule_based"))
    # the pipeline again, as the trainer makes it: the same seed gives the same batches
    rows, _ = training.training_rows(paths, hparams, task.example_counts(paths))
    expected = list(data.parsed(rows, vocabs, hparams.objectives, sparse_rules=True).take(4))
    texts = [spec["name"] for spec in meta["specs"] if spec["sparse"]]
    assert texts  # the demo catalogue's text fields: sparse TF-IDF
    for (inputs, targets, weights), batch in zip(expected, loaded):
        tf_inputs, tf_targets, tf_weights = saved_batches.tensorflow_batch(batch, meta)
        jax_inputs, jax_targets, jax_weights = saved_batches.jax_batch(batch, meta)
        for name, value in inputs.items():
            np.testing.assert_allclose(dense(tf_inputs[name]), dense(value), err_msg=name)
            jax_value = jax_inputs[name].todense() if name in texts else jax_inputs[name]
            np.testing.assert_allclose(np.asarray(jax_value), dense(value), err_msg=name)
        for name in ("exclusive", "rule_based"):
            np.testing.assert_array_equal(dense(tf_targets[name]), dense(targets[name]))
            np.testing.assert_array_equal(np.asarray(jax_targets[name]), dense(targets[name]))
            np.testing.assert_array_equal(np.asarray(jax_weights[name]), weights[name].numpy())
            np.testing.assert_array_equal(tf_weights[name].numpy(), weights[name].numpy())
    # some rows have several rule categories, so the padding was exercised
    assert loaded[0]["target/rule_based/lengths"].max() > 1


WITHOUT_TENSORFLOW = """
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no TensorFlow here")

sys.meta_path.insert(0, NoTensorFlow())
from benchmarks.trainer_throughput import saved_batches_rate

result = saved_batches_rate(sys.argv[1], "jax", 3)
print(result["rows_per_second"], result["d_loss"], "tensorflow" in sys.modules)
"""


def test_the_throughput_benchmark_times_the_default_model_on_both_backends(tmp_path, monkeypatch):
    paths, _ = preprocessed_run(tmp_path, monkeypatch, 200, 6, 0.3)
    saved = tmp_path / "batches.npz"
    env = {**os.environ, "PRODCAT_PREFIX": paths.prefix, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer_throughput",
                           "--save-batches", str(saved), "--run-id", paths.run_id,
                           "--count", "3"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "saved 3 batches" in done.stdout
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer_throughput", "--batches",
                           str(saved), "--backend", "jax", "--steps", "3"], env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()
            if line.startswith(("jax ", "tensorflow "))}
    assert set(rows) == {"jax", "tensorflow"}
    assert all(float(row[1].replace(",", "")) > 0 for row in rows.values())
    assert rows["tensorflow"][2] == "1.00x" and rows["jax"][3] == "-"  # no GPU here
    assert not math.isnan(float(rows["jax"][2].rstrip("x")))
    # as on a GPU worker: JAX and no TensorFlow at all
    done = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(saved)],
                          env={**env, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rate, d_loss, tensorflow_loaded = done.stdout.split()[-3:]
    assert float(rate) > 0 and math.isfinite(float(d_loss)) and tensorflow_loaded == "False"
    # where the step's time goes: every part named, the rule head's loss among them
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer_throughput", "--batches",
                           str(saved), "--profile", str(tmp_path / "profile")], env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = {line[:28].strip(): float(line.split()[-1].rstrip("%"))
             for line in done.stdout.splitlines() if line.startswith("  ")}
    assert {"rule head and its loss", "encoder", "discriminator", "optimizers"} <= set(parts)
    assert parts["rule head and its loss"] > 0
    assert abs(sum(parts.values()) - 100) < 0.5
    assert list((tmp_path / "profile").rglob("*.xplane.pb"))


def test_the_throughput_benchmark_refuses_what_it_cannot_read(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer_throughput", "--batches",
                           str(tmp_path / "none.npz")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and "no such file" in done.stderr
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer_throughput",
                           "--save-batches", str(tmp_path / "b.npz"), "--run-id", "../up"],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "--run-id" in done.stderr
    assert not (tmp_path / "b.npz").exists()
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer_throughput", "--profile",
                           str(tmp_path / "p")], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "--profile needs --batches" in done.stderr
