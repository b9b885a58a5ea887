"""The supervised models: input towers from the feature config, a shared trunk, one
head per objective (softmax for ``exclusive``, sigmoid for ``rule_based``).

``linear`` (logistic regression on the inputs), ``dnn`` (hidden layers) and
``wide_deep`` (a linear part on the sparse inputs added to the DNN's logits) are
the baselines of the semi-supervised GAN in ``ssl_gan.py``, which reuses the same
input towers and heads.

As the SSL-GAN, a supervised model trains on the rule-based head's logits (its loss,
``RuleBasedCrossEntropy``, reads the input pipeline's sparse targets as they are) and is
saved as ``classifier(model)``, which adds the sigmoid: what evaluation, prediction and
export load answers with probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras

from trainer.hparams import HParams
from trainer.optimizers import LazyAdam

if TYPE_CHECKING:  # the model code itself stays free of TensorFlow
    from trainer.accelerators import Accelerator


def is_sparse(value) -> bool:
    """A TensorFlow ``SparseTensor`` (sparse text inputs, the input pipeline's sparse rule targets)."""
    return hasattr(value, "dense_shape")


def mean_rule_bce(targets, logits):
    """Per row, the mean binary cross-entropy over the rule-based categories, from their
    logits; ``targets`` dense 0/1 or a TensorFlow ``SparseTensor``, which
    ``trainer.sparse_targets`` reads without making it dense."""
    if is_sparse(targets):
        from trainer.sparse_targets import mean_bce_rows  # TensorFlow: its pipeline's targets

        return mean_bce_rows(targets, logits)
    return keras.ops.mean(keras.ops.binary_crossentropy(targets, logits, from_logits=True),
                          axis=-1)


@keras.saving.register_keras_serializable(package="prodcat")
class RuleBasedCrossEntropy(keras.losses.Loss):
    """The rule-based head's compiled loss: ``mean_rule_bce`` of its logits, the targets
    dense or sparse."""

    def call(self, y_true, y_pred):
        return mean_rule_bce(y_true, y_pred)


LOSSES = {"exclusive": "sparse_categorical_crossentropy", "rule_based": RuleBasedCrossEntropy()}


@keras.saving.register_keras_serializable(package="prodcat")
class SparseInputDense(keras.layers.Dense):
    """``Dense`` over a sparse input (a TF-IDF vector): the same weights and function, but on
    TensorFlow the kernel's rows of the input's non-zero columns are gathered from the
    variable itself (``ResourceGather``), never the whole kernel read.

    Keras' ``Dense`` reads the kernel as a tensor first, and TensorFlow copies a variable
    on every read once it has been updated row by row (``LazyAdam``'s scatter updates put
    it in copy-on-read mode): a [17,000 x 128] kernel copied each step to use a few hundred
    of its rows. Other backends (JAX's ``BCOO``) and dense inputs take ``Dense`` unchanged.
    """

    def call(self, inputs, training=None):
        if keras.backend.backend() != "tensorflow" or not is_sparse(inputs) or \
                self.lora_enabled or self.quantization_mode:
            return super().call(inputs, training=training)
        import tensorflow as tf

        # every row needs an entry, or the lookup's output would lack that row
        filled, _ = tf.sparse.fill_empty_rows(inputs, tf.zeros([], inputs.dtype))
        ids = tf.SparseTensor(filled.indices, filled.indices[:, 1], filled.dense_shape)
        x = tf.nn.embedding_lookup_sparse(self._kernel.value, ids, filled, combiner="sum")
        x = tf.cast(x, self.compute_dtype)
        x.set_shape([inputs.shape[0], self.units])
        if self.use_bias:
            x = x + self.bias
        return self.activation(x) if self.activation is not None else x


@dataclass(frozen=True)
class ModelInput:
    """One model input: ``vector`` (e.g. TF-IDF), ``categorical``, ``image`` or ``scalar``;
    a ``sparse`` vector arrives as a sparse tensor and is never made dense."""

    name: str
    kind: str
    size: int = 1  # vector width, vocabulary size (with OOV), or image side
    embedding_dim: int = 0
    sparse: bool = False


def model_inputs(vocabs) -> list[ModelInput]:
    """The model inputs the feature config and the learnt vocabularies imply (text as
    sparse TF-IDF vectors)."""
    kinds = {"text": "vector", "categorical": "categorical", "image": "image", "dense": "scalar"}
    return [ModelInput(f.name, kinds[f.kind],
                       f.image_size if f.kind == "image" else
                       vocabs.input_size(f) if f.kind in ("text", "categorical") else 1,
                       f.embedding_dim, sparse=f.kind == "text") for f in vocabs.config.features]


@dataclass(frozen=True)
class Parts:
    """Features side by side: ``dense`` tensors, concatenated, and ``sparse`` inputs
    (name -> sparse tensor), each multiplied by its own kernel (``dense_layer``)."""

    dense: tuple = ()
    sparse: tuple = ()  # (name, tensor) pairs

    def __bool__(self) -> bool:
        return bool(self.dense or self.sparse)


def input_towers(specs: list[ModelInput]):
    """``(inputs, deep Parts, wide Parts)``: embeddings for categoricals, pixels for
    images; the wide part sees the sparse inputs (vectors, one-hot categoricals)."""
    inputs, deep, wide, sparse = {}, [], [], []
    for spec in specs:
        if spec.kind == "vector":
            inputs[spec.name] = keras.Input((spec.size,), name=spec.name, sparse=spec.sparse)
            if spec.sparse:
                sparse.append((spec.name, inputs[spec.name]))
            else:
                deep.append(inputs[spec.name])
                wide.append(inputs[spec.name])
        elif spec.kind == "categorical":
            inputs[spec.name] = keras.Input((), dtype="int64", name=spec.name)
            deep.append(keras.layers.Embedding(spec.size, spec.embedding_dim,
                                               name=f"{spec.name}_embedding")(inputs[spec.name]))
            wide.append(keras.layers.CategoryEncoding(spec.size, output_mode="one_hot",
                                                      name=f"{spec.name}_one_hot")(inputs[spec.name]))
        elif spec.kind == "image":
            inputs[spec.name] = keras.Input((spec.size, spec.size, 1), name=spec.name)
            deep.append(keras.layers.Flatten(name=f"{spec.name}_pixels")(inputs[spec.name]))
        else:
            inputs[spec.name] = keras.Input((1,), name=spec.name)
            deep.append(inputs[spec.name])
            wide.append(inputs[spec.name])
    return inputs, Parts(tuple(deep), tuple(sparse)), Parts(tuple(wide), tuple(sparse))


def dense_layer(x, units: int, name: str, activation=None):
    """``Dense(units)`` over ``x`` (a tensor or ``Parts``). Over parts it is the same function
    as one Dense on their concatenation, written as a sum: the dense parts' Dense plus,
    per sparse input, a bias-free kernel applied by a sparse-dense product, so a
    17,000-word TF-IDF vector costs its few non-zero words, not 17,000 columns."""
    if not isinstance(x, Parts):
        return keras.layers.Dense(units, activation=activation, name=name)(x)
    terms = []
    if x.dense:
        joined = x.dense[0] if len(x.dense) == 1 else keras.layers.Concatenate(
            name=f"{name}_inputs")(list(x.dense))
        terms.append(keras.layers.Dense(units, name=name if not x.sparse else f"{name}_dense")(joined))
    for part, tensor in x.sparse:
        terms.append(SparseInputDense(units, use_bias=not terms, name=f"{name}_{part}")(tensor))
    if len(terms) == 1 and activation is None:
        return terms[0]
    summed = terms[0] if len(terms) == 1 else keras.layers.Add(name=f"{name}_sum")(terms)
    return keras.layers.Activation(activation or "linear", name=f"{name}_activation")(summed)


def hidden_stack(x, hparams: HParams, prefix: str = "hidden"):
    """``hparams.hidden_units`` ReLU layers with dropout over ``x`` (a tensor or ``Parts``)."""
    for i, units in enumerate(hparams.hidden_units):
        x = dense_layer(x, units, f"{prefix}_{i}", activation="relu")
        x = keras.layers.Dropout(hparams.dropout, seed=hparams.seed)(x)
    return x


def heads(trunk, hparams: HParams, classes: dict[str, int], wide: Parts | None = None) -> dict:
    """One output per objective: the exclusive classes' probabilities, the rule-based
    categories' logits (``classifier`` adds their sigmoid); ``wide`` adds a linear part to
    the logits."""
    activations = {"exclusive": "softmax", "rule_based": "linear"}
    outputs = {}
    for objective in hparams.objectives:
        logits = dense_layer(trunk, classes[objective], f"{objective}_logits")
        if wide:
            linear = dense_layer(wide, classes[objective], f"{objective}_wide")
            logits = keras.layers.Add(name=f"{objective}_wide_deep")([logits, linear])
        outputs[objective] = keras.layers.Activation(activations[objective], name=objective,
                                                     dtype="float32")(logits)
    return outputs


def classifier(model: keras.Model) -> keras.Model:
    """A supervised model as it is saved: the same layers, the rule-based head's logits
    turned into probabilities."""
    outputs = dict(model.output)
    if "rule_based" in outputs:
        outputs["rule_based"] = keras.layers.Activation(
            "sigmoid", name="rule_based_probabilities", dtype="float32")(outputs["rule_based"])
    return keras.Model(model.input, outputs, name=model.name)


def build_model(hparams: HParams, specs: list[ModelInput], classes: dict[str, int],
                accelerator: Accelerator | None = None) -> keras.Model:
    """A compiled supervised model of ``hparams.model_type``; ``accelerator`` (precision,
    XLA) defaults to float32 without XLA. Keras scales the loss itself under float16."""
    inputs, deep, wide = input_towers(specs)
    if hparams.model_type == "linear":
        outputs = heads(deep, hparams, classes)
    elif hparams.model_type == "dnn":
        outputs = heads(hidden_stack(deep, hparams), hparams, classes)
    elif hparams.model_type == "wide_deep":
        outputs = heads(hidden_stack(deep, hparams), hparams, classes, wide=wide or None)
    else:
        raise ValueError(f"{hparams.model_type!r} is not a supervised model type")
    model = keras.Model(inputs, outputs, name=f"prodcat_{hparams.model_type}")
    model.compile(optimizer=LazyAdam(hparams.learning_rate),
                  loss={objective: LOSSES[objective] for objective in outputs},
                  jit_compile=accelerator.jit_compile if accelerator else False,
                  steps_per_execution=accelerator.steps_per_execution if accelerator else 1)
    return model
