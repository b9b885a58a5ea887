"""Where and how the trainer computes, so one command serves a laptop and a GPU worker.

- Several visible GPUs: ``MirroredStrategy`` (synchronous data parallelism; each
  batch of ``batch_size`` rows is split between the GPUs). One GPU or none: the
  default strategy.
- ``--precision auto``: ``mixed_bfloat16`` on GPUs that compute in bfloat16
  natively (compute capability 8.0+: A100, H100), ``mixed_float16`` with loss
  scaling on older ones, ``float32`` on CPU (mixed precision only costs there).
- ``--xla auto``: XLA compilation of the train step on GPU, where fusing the many
  small dense-layer kernels pays; off on CPU, where it only adds compile time
  (``benchmarks/trainer_throughput.py`` measures both).

These are how a model is trained, not what is trained, so they are not part of
the hyperparameters or of the ``hparams_id``: a run resumes on another machine.
TensorFlow is imported only when devices are chosen, so the controller can check
its arguments first.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("prodcat.trainer")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
XLA_CHOICES = ("auto", "on", "off")
BFLOAT16_COMPUTE_CAPABILITY = (8, 0)
# train steps per call into the compiled graph on one device: the per-step Python and
# callback overhead of ``fit`` is paid once every 16 batches (``benchmarks.trainer_throughput``
# measures it). Several replicas keep 1: a distributed multi-step loop ends badly when the
# data runs out inside it.
STEPS_PER_EXECUTION = 16


@dataclass(frozen=True)
class Accelerator:
    strategy: Any  # a tf.distribute.Strategy
    precision: str
    jit_compile: bool
    gpus: int

    def describe(self) -> dict:
        return {"gpus": self.gpus, "replicas": self.strategy.num_replicas_in_sync,
                "strategy": type(self.strategy).__name__, "precision": self.precision,
                "xla": self.jit_compile}

    @property
    def steps_per_execution(self) -> int:
        return STEPS_PER_EXECUTION if self.strategy.num_replicas_in_sync == 1 else 1

    def loss_scale_optimizer(self, optimizer):
        """Wrap an optimizer for float16 training (bfloat16 and float32 need no scaling)."""
        if self.precision == "mixed_float16":
            import keras

            return keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer


def _auto_precision(gpus: list) -> str:
    import tensorflow as tf

    if not gpus:
        return "float32"
    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                    for gpu in gpus]
    return "mixed_bfloat16" if min(capabilities) >= BFLOAT16_COMPUTE_CAPABILITY else "mixed_float16"


def choose(precision: str = "auto", xla: str = "auto") -> Accelerator:
    """Pick strategy, precision and XLA for the devices at hand and set the dtype policy.

    Call before building the model: layers take the global dtype policy when built.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
    if xla not in XLA_CHOICES:
        raise ValueError(f"xla {xla!r}: choose one of {XLA_CHOICES}")
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    chosen = _auto_precision(gpus) if precision == "auto" else precision
    keras.mixed_precision.set_dtype_policy(chosen)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    accelerator = Accelerator(strategy, chosen, bool(gpus) if xla == "auto" else xla == "on",
                              len(gpus))
    log.info("training on %s", accelerator.describe())
    return accelerator
