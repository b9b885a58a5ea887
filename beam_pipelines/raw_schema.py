"""The raw product schema the TF Transform job reads, derived from the feature config.

Also turns one dumped product (a JSON object) into a raw instance, or says why
it cannot: such a product goes to the quarantine, never silently away. Text is
normalised here, where Python's full Unicode and HTML support is at hand (NFKC,
HTML entities, invisible format characters); the rest of the cleaning is in the
TF graph, so the exported model applies it at serving time too.
"""
from __future__ import annotations

import html
import math
import re
import unicodedata

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils

from shared_config.features import FeatureConfig
from shared_config.splits import group_key

ID_KEY = "id"
GROUP_KEY = "group"  # the key that decides the split: the product's group id, else its id
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BadRecord(ValueError):
    """A product that cannot be preprocessed; ``kind`` names the reason for the metrics."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def raw_feature_spec(config: FeatureConfig) -> dict:
    spec = {ID_KEY: tf.io.FixedLenFeature([], tf.string),
            GROUP_KEY: tf.io.FixedLenFeature([], tf.string)}
    for feature in config.features:
        dtype = tf.float32 if feature.kind == "dense" else tf.string
        spec[feature.name] = tf.io.FixedLenFeature([], dtype)
    for objective in config.label_fields:
        spec[objective] = tf.io.VarLenFeature(tf.string)
    return spec


def raw_schema(config: FeatureConfig):
    return schema_utils.schema_from_feature_spec(raw_feature_spec(config))


def valid_unicode(text: str) -> str:
    """The text with each lone surrogate (valid in JSON, not encodable as UTF-8) replaced
    by U+FFFD: every string of a product passes here before it reaches Beam or TF."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def normalise_text(text: str) -> str:
    """Valid Unicode, NFKC, HTML entities decoded, invisible format characters removed."""
    if text.isascii() and "&" not in text:  # all of that leaves such a text as it is
        return text
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", html.unescape(valid_unicode(text))))


def to_raw_instance(product, config: FeatureConfig) -> dict:
    """One product as the dict TF Transform reads; raise BadRecord with the reason.

    Image features carry the image *reference* here; the job replaces it with the
    fetched bytes.
    """
    if not isinstance(product, dict):
        raise BadRecord("not_an_object", f"not a JSON object but {type(product).__name__}")
    product_id = product.get(config.id_field)
    if not isinstance(product_id, str) or not product_id.strip():
        raise BadRecord("missing_id", f"missing or empty '{config.id_field}'")
    if len(product_id) > 512:
        raise BadRecord("oversized", f"'{config.id_field}' is {len(product_id)} characters")
    if valid_unicode(product_id) != product_id:  # replacing it would update another product
        raise BadRecord("bad_id", f"'{config.id_field}' is not valid Unicode (a lone surrogate)")
    group = product.get(config.group_field) if config.group_field else None
    if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int, float))):
        raise BadRecord("wrong_type", f"'{config.group_field}' should be an id, got "
                                      f"{type(group).__name__}")
    if isinstance(group, str) and len(group) > 512:
        raise BadRecord("oversized", f"'{config.group_field}' is {len(group)} characters")
    instance = {ID_KEY: product_id,
                GROUP_KEY: valid_unicode(group_key(product, config.group_field, config.id_field))}
    for feature in config.features:
        value = product.get(feature.name)
        if feature.kind == "dense":
            instance[feature.name] = _number(feature.name, value)
            continue
        if value is None:
            value = ""
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise BadRecord("wrong_type",
                            f"'{feature.name}' should be text, got {type(value).__name__}")
        if len(value) > config.max_field_chars:
            raise BadRecord("oversized", f"'{feature.name}' is {len(value):,} characters, over "
                                         f"the {config.max_field_chars:,} limit")
        instance[feature.name] = valid_unicode(value).strip() if feature.kind == "image" \
            else normalise_text(value)
    for objective, field in config.label_fields.items():
        instance[objective] = _labels(field, product.get(field))
    if len(instance["exclusive"]) > 1:
        raise BadRecord("bad_label", "an exclusive label names one category, not a list")
    return instance


def _number(name: str, value) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise BadRecord("wrong_type", f"'{name}' should be a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRecord("wrong_type", f"'{name}' should be a number, got {value!r:.80}") from None
    if not math.isfinite(number):
        raise BadRecord("wrong_type", f"'{name}' is not finite: {value!r}")
    return number


def _labels(field: str, value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [valid_unicode(value)]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [valid_unicode(v) for v in value if v]
    raise BadRecord("bad_label", f"'{field}' should be a category or a list of categories")
