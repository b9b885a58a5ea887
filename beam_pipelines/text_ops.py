"""Affiliate-independent text cleaning as TF ops, so training and serving clean alike."""
from __future__ import annotations

import tensorflow as tf

MAX_TOKEN_CHARS = 30  # longer "words" are URLs, hashes, run-together junk

_TAG = r"<[^>]{0,200}>"
_ENTITY = r"&#?[A-Za-z0-9]{1,10};"
_NOT_WORD = r"[^\p{L}\p{N}]+"  # punctuation and every category delimiter (> // / | ›)


def clean(text: tf.Tensor) -> tf.Tensor:
    """Lower-cased words separated by single spaces: tags, leftover entities and
    punctuation gone, so "Shoes > Sneakers", "shoes|sneakers" and
    "Shoes // Sneakers" all read "shoes sneakers"."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, _TAG, " ")
    text = tf.strings.regex_replace(text, _ENTITY, " ")
    text = tf.strings.regex_replace(text, _NOT_WORD, " ")
    return tf.strings.strip(text)


def tokens(text: tf.Tensor) -> tf.SparseTensor:
    """The cleaned words, without noise tokens (too long to be words)."""
    words = tf.strings.split(clean(text))
    keep = tf.strings.length(words, unit="UTF8_CHAR") <= MAX_TOKEN_CHARS
    return tf.ragged.boolean_mask(words, keep).to_sparse()
