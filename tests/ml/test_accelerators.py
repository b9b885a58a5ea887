"""Devices, precision and replicas: the GPU code paths, checked on CPU.

Two replicas run on two logical CPU devices (a child process, since TensorFlow
fixes its devices at start-up); mixed precision runs on CPU kernels.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import accelerators
from trainer.hparams import HParams
from trainer.model import ModelInput, build_model
from trainer.ssl_gan import build_ssl_gan

SPECS, CLASSES = [ModelInput("x", "vector", 20)], {"exclusive": 2, "rule_based": 1}


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def toy_rows(n=512):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    vectors = rng.normal(0, 1, (n, 20)).astype("float32") + labels[:, None] * 4.0
    return tf.data.Dataset.from_tensor_slices((
        {"x": vectors}, {"exclusive": labels, "rule_based": np.zeros((n, 1), "float32")},
        {"exclusive": np.ones(n, "float32"), "rule_based": np.zeros(n, "float32")}))


def test_auto_on_a_cpu_machine_is_float32_without_xla_or_replicas():
    chosen = accelerators.choose()
    assert chosen.describe() == {"gpus": 0, "replicas": 1, "strategy": "_DefaultDistributionStrategy",
                                 "precision": "float32", "xla": False}
    assert keras.mixed_precision.dtype_policy().name == "float32"


def test_bad_device_settings_are_refused():
    with pytest.raises(ValueError, match="precision 'half'"):
        accelerators.choose(precision="half")
    with pytest.raises(ValueError, match="xla 'maybe'"):
        accelerators.choose(xla="maybe")


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_the_ssl_gan_learns_in_mixed_precision_with_float32_outputs(precision):
    keras.utils.set_random_seed(0)
    chosen = accelerators.choose(precision, "on")
    hparams = HParams(hidden_units=(16,), dropout=0.0, input_noise=0.0, learning_rate=3e-3)
    model = build_ssl_gan(hparams, SPECS, CLASSES, chosen)
    assert model.discriminator.get_layer("discriminator_0").compute_dtype == precision[6:]
    scaled = isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")  # bfloat16 has float32's range
    assert model.jit_compile
    history = model.fit(toy_rows().batch(32).repeat(), steps_per_epoch=16, epochs=3,
                        verbose=0).history["exclusive"]
    assert np.isfinite(history).all() and history[-1] < history[0] * 0.8, history
    probabilities = model.classifier()({"x": np.zeros((2, 20), "float32")})["exclusive"]
    assert probabilities.dtype == "float32"


def test_supervised_models_take_the_same_settings():
    chosen = accelerators.choose("mixed_float16", "on")
    model = build_model(HParams(model_type="dnn", hidden_units=(8,)), SPECS, CLASSES, chosen)
    assert model.jit_compile and isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("exclusive").compute_dtype == "float32"


TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from trainer.hparams import HParams
    from trainer.model import ModelInput
    from trainer.ssl_gan import build_ssl_gan

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (8, 20)).astype("float32")
    y = rng.integers(0, 2, 8)
    rows = tf.data.Dataset.from_tensor_slices((
        {"x": x}, {"exclusive": y, "rule_based": rng.integers(0, 2, (8, 3)).astype("float32")},
        {"exclusive": np.ones(8, "float32"), "rule_based": np.ones(8, "float32")})).batch(8)
    hparams = HParams(hidden_units=(16,), dropout=0.0, input_noise=0.0, seed=3)

    def one_step(strategy):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model = build_ssl_gan(hparams, [ModelInput("x", "vector", 20)],
                                  {"exclusive": 2, "rule_based": 3})
            model.d_optimizer = keras.optimizers.SGD(0.5)
            model.g_optimizer = keras.optimizers.SGD(0.5)
        fake = model.generator.get_layer("fake_vector")  # every fake vector 0, whatever the noise
        fake.set_weights([np.zeros_like(w) for w in fake.get_weights()])
        before = [w.tolist() for w in model.discriminator.get_weights()]
        model.fit(rows, epochs=1, verbose=0)
        after = [w.tolist() for w in model.discriminator.get_weights()]
        return before, after, strategy.num_replicas_in_sync

    initial, single, one = one_step(tf.distribute.get_strategy())
    _, mirrored, two = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    json.dump({"replicas": [one, two], "initial": initial, "single": single,
               "mirrored": mirrored}, sys.stdout)
""")


def test_two_replicas_take_the_same_step_as_one_device():
    """Each replica's loss counts 1/n, so the summed gradients equal one device's."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == [1, 2]
    for single, mirrored in zip(result["single"], result["mirrored"]):
        np.testing.assert_allclose(np.array(mirrored), np.array(single), rtol=1e-4, atol=1e-5)
    moved = [np.abs(np.array(a) - np.array(b)).max() for a, b in zip(result["single"], result["initial"])]
    assert max(moved) > 1e-3  # the step did change the weights
