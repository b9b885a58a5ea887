"""The one-pass TF-IDF against TF Transform's own two-pass ``tft.tfidf``."""
from __future__ import annotations

import math
import os
import tempfile

import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from beam_pipelines import text_ops, tfidf

TEXTS = ["red dress red belt", "blue dress", "red shirt", "dress dress dress dress",
         "green dress with pockets", "", "shirt"]
METADATA = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
    {"text": tf.io.FixedLenFeature([], tf.string)}))


def transform(preprocessing_fn, texts=TEXTS):
    """The transformed rows and the vocabulary file's lines."""
    with tempfile.TemporaryDirectory() as temp, tft_beam.Context(temp_dir=temp):
        (rows, _), (saved_model, _) = (
            ([{"text": t} for t in texts], METADATA)
            | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
        # run on lists, the transform function comes as a one-item list of its directory
        with open(os.path.join(saved_model[0], "assets", "text"), encoding="utf-8") as lines:
            vocab = lines.read().splitlines()
    return rows, vocab


def weights_by_token(rows, vocab, oov="<oov>"):
    """Each product's {token: weight}, ids read back through the vocabulary."""
    token = (lambda i: vocab[i] if i < len(vocab) else oov)
    return [{token(i): w for i, w in zip(row["ids"], row["weights"])} for row in rows]


def one_pass(top_k):
    def preprocessing_fn(inputs):
        ids, weights = tfidf.tfidf(text_ops.tokens(inputs["text"]), top_k, 1, "text")
        return {"ids": ids, "weights": weights}
    return preprocessing_fn


def two_pass(inputs):
    ids = tft.compute_and_apply_vocabulary(text_ops.tokens(inputs["text"]), top_k=100,
                                           num_oov_buckets=1, vocab_filename="text")
    term_ids, weights = tft.tfidf(ids, 101)
    return {"ids": term_ids, "weights": weights}


def test_weights_equal_tf_transforms_own_when_every_token_is_in_the_vocabulary():
    ours, our_vocab = transform(one_pass(100))
    theirs, their_vocab = transform(two_pass)
    tokens = [line.split(" ", 1)[1] for line in our_vocab]
    assert sorted(tokens) == sorted(their_vocab)
    ours_by_token, theirs_by_token = (weights_by_token(ours, tokens),
                                      weights_by_token(theirs, their_vocab))
    assert len(ours_by_token) == len(TEXTS)
    for mine, reference in zip(ours_by_token, theirs_by_token):
        assert mine.keys() == reference.keys()
        for token, weight in mine.items():
            assert weight == pytest.approx(reference[token], rel=1e-6)
    # a product's distinct terms, once each: "dress" x4 is one entry of weight 1 * idf
    assert list(ours_by_token[3]) == ["dress"]
    assert ours_by_token[5] == {}


def test_the_vocabulary_ranks_by_products_holding_a_token_and_stores_that_number():
    rows, vocab = transform(one_pass(2))
    # "dress" is in 4 products; "red" (3 times in all) and "shirt" in 2; a product that
    # repeats "dress" 4 times counts once
    assert vocab[0] == "4 dress"
    assert vocab[1] in {"2 red", "2 shirt"}
    by_token = weights_by_token(rows, [line.split(" ", 1)[1] for line in vocab])
    n = len(TEXTS)
    # "green dress with pockets": dress in the vocabulary, three out-of-vocabulary tokens
    # in the one bucket, which weighs as a term every product holds (idf 1)
    assert by_token[4]["dress"] == pytest.approx(0.25 * (1 + math.log((n + 1) / 5)), rel=1e-6)
    assert by_token[4]["<oov>"] == pytest.approx(0.75, rel=1e-6)
