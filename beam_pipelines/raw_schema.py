"""The raw product schema the TF Transform job reads, derived from the feature config.

Also turns one dumped product (a JSON object) into a raw instance, or says why
it cannot: such a product goes to the quarantine, never silently away.
"""
from __future__ import annotations

import math

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils

from shared_config.features import FeatureConfig

ID_KEY = "id"


class BadRecord(ValueError):
    """A product that cannot be preprocessed; the message is the quarantine reason."""


def raw_feature_spec(config: FeatureConfig) -> dict:
    spec = {ID_KEY: tf.io.FixedLenFeature([], tf.string)}
    for feature in config.features:
        if feature.kind == "dense":
            spec[feature.name] = tf.io.FixedLenFeature([], tf.float32)
        else:
            spec[feature.name] = tf.io.FixedLenFeature([], tf.string)
    for objective in config.label_fields:
        spec[objective] = tf.io.VarLenFeature(tf.string)
    return spec


def raw_schema(config: FeatureConfig):
    return schema_utils.schema_from_feature_spec(raw_feature_spec(config))


def to_raw_instance(product, config: FeatureConfig) -> dict:
    """One product as the dict TF Transform reads; raise BadRecord with the reason."""
    if not isinstance(product, dict):
        raise BadRecord(f"not a JSON object but {type(product).__name__}")
    product_id = product.get(config.id_field)
    if not isinstance(product_id, str) or not product_id.strip():
        raise BadRecord(f"missing or empty '{config.id_field}'")
    instance = {ID_KEY: product_id}
    for feature in config.features:
        value = product.get(feature.name)
        if feature.kind == "dense":
            instance[feature.name] = _number(feature.name, value)
        elif value is None:
            instance[feature.name] = ""
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            instance[feature.name] = str(value)
        else:
            raise BadRecord(f"'{feature.name}' should be text, got {type(value).__name__}")
    for objective, field in config.label_fields.items():
        instance[objective] = _labels(field, product.get(field))
    if len(instance["exclusive"]) > 1:
        raise BadRecord("an exclusive label names one category, not a list")
    return instance


def _number(name: str, value) -> float:
    if value is None or value == "":
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRecord(f"'{name}' should be a number, got {value!r:.80}") from None
    if not math.isfinite(number):
        raise BadRecord(f"'{name}' is not finite: {value!r}")
    return number


def _labels(field: str, value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise BadRecord(f"'{field}' should be a category or a list of categories")
