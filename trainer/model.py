"""The multi-objective classifier: input towers from the feature config, a shared
trunk, one head per objective (softmax for ``exclusive``, sigmoid for ``rule_based``).
"""
from __future__ import annotations

import keras

from trainer.data import Vocabularies
from trainer.hparams import HParams

LOSSES = {"exclusive": "sparse_categorical_crossentropy", "rule_based": "binary_crossentropy"}


def build_model(hparams: HParams, vocabs: Vocabularies) -> keras.Model:
    inputs, encoded = {}, []
    for feature in vocabs.config.features:
        if feature.kind == "text":
            inputs[feature.name] = keras.Input((vocabs.input_size(feature),), name=feature.name)
            encoded.append(inputs[feature.name])
        elif feature.kind == "categorical":
            inputs[feature.name] = keras.Input((), dtype="int64", name=feature.name)
            embedding = keras.layers.Embedding(vocabs.input_size(feature), feature.embedding_dim,
                                               name=f"{feature.name}_embedding")
            encoded.append(embedding(inputs[feature.name]))
        elif feature.kind == "image":
            size = feature.image_size
            inputs[feature.name] = keras.Input((size, size, 1), name=feature.name)
            encoded.append(keras.layers.Flatten(name=f"{feature.name}_pixels")(inputs[feature.name]))
        else:
            inputs[feature.name] = keras.Input((1,), name=feature.name)
            encoded.append(inputs[feature.name])
    trunk = keras.layers.Concatenate(name="features")(encoded)
    if hparams.model_type == "dnn":
        for i, units in enumerate(hparams.hidden_units):
            trunk = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(trunk)
            trunk = keras.layers.Dropout(hparams.dropout, seed=hparams.seed)(trunk)
    outputs = {}
    if "exclusive" in hparams.objectives:
        outputs["exclusive"] = keras.layers.Dense(
            len(vocabs.labels("exclusive")), activation="softmax", name="exclusive")(trunk)
    if "rule_based" in hparams.objectives:
        outputs["rule_based"] = keras.layers.Dense(
            len(vocabs.labels("rule_based")), activation="sigmoid", name="rule_based")(trunk)
    model = keras.Model(inputs, outputs, name=f"prodcat_{hparams.model_type}")
    model.compile(
        optimizer=keras.optimizers.Adam(hparams.learning_rate),
        loss={objective: LOSSES[objective] for objective in outputs},
    )
    return model
