"""The supervised models: input towers from the feature config, a shared trunk, one
head per objective (softmax for ``exclusive``, sigmoid for ``rule_based``).

``linear`` (logistic regression on the inputs), ``dnn`` (hidden layers) and
``wide_deep`` (a linear part on the sparse inputs added to the DNN's logits) are
the baselines of the semi-supervised GAN in ``ssl_gan.py``, which reuses the same
input towers and heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras

from trainer.hparams import HParams

if TYPE_CHECKING:  # the model code itself stays free of TensorFlow
    from trainer.accelerators import Accelerator

LOSSES = {"exclusive": "sparse_categorical_crossentropy", "rule_based": "binary_crossentropy"}


@dataclass(frozen=True)
class ModelInput:
    """One model input: ``vector`` (e.g. TF-IDF), ``categorical``, ``image`` or ``scalar``."""

    name: str
    kind: str
    size: int = 1  # vector width, vocabulary size (with OOV), or image side
    embedding_dim: int = 0


def model_inputs(vocabs) -> list[ModelInput]:
    """The model inputs the feature config and the learnt vocabularies imply."""
    kinds = {"text": "vector", "categorical": "categorical", "image": "image", "dense": "scalar"}
    return [ModelInput(f.name, kinds[f.kind],
                       f.image_size if f.kind == "image" else
                       vocabs.input_size(f) if f.kind in ("text", "categorical") else 1,
                       f.embedding_dim) for f in vocabs.config.features]


def input_towers(specs: list[ModelInput]):
    """``(inputs, deep features, wide features)``: embeddings for categoricals, pixels
    for images; the wide part sees the sparse inputs (vectors, one-hot categoricals)."""
    inputs, deep, wide = {}, [], []
    for spec in specs:
        if spec.kind == "vector":
            inputs[spec.name] = keras.Input((spec.size,), name=spec.name)
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
    concat = (lambda parts, name: parts[0] if len(parts) == 1
              else keras.layers.Concatenate(name=name)(parts))
    return inputs, concat(deep, "features"), (concat(wide, "wide_features") if wide else None)


def hidden_stack(x, hparams: HParams, prefix: str = "hidden"):
    for i, units in enumerate(hparams.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}_{i}")(x)
        x = keras.layers.Dropout(hparams.dropout, seed=hparams.seed)(x)
    return x


def heads(trunk, hparams: HParams, classes: dict[str, int], wide=None) -> dict:
    """One probability output per objective; ``wide`` adds a linear part to the logits."""
    activations = {"exclusive": "softmax", "rule_based": "sigmoid"}
    outputs = {}
    for objective in hparams.objectives:
        logits = keras.layers.Dense(classes[objective], name=f"{objective}_logits")(trunk)
        if wide is not None:
            linear = keras.layers.Dense(classes[objective], name=f"{objective}_wide")(wide)
            logits = keras.layers.Add(name=f"{objective}_wide_deep")([logits, linear])
        outputs[objective] = keras.layers.Activation(activations[objective], name=objective,
                                                     dtype="float32")(logits)
    return outputs


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
        outputs = heads(hidden_stack(deep, hparams), hparams, classes, wide=wide)
    else:
        raise ValueError(f"{hparams.model_type!r} is not a supervised model type")
    model = keras.Model(inputs, outputs, name=f"prodcat_{hparams.model_type}")
    model.compile(optimizer=keras.optimizers.Adam(hparams.learning_rate),
                  loss={objective: LOSSES[objective] for objective in outputs},
                  jit_compile=accelerator.jit_compile if accelerator else False)
    return model
