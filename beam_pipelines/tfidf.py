"""TF-IDF in one pass of TF Transform's analysis.

``tft.tfidf`` counts the documents holding each term after the vocabulary has been
applied, so its analysis takes two passes over the catalogue, and on Beam's local
runner the whole catalogue is held in memory between them (about 0.7 GiB per
100,000 products; see the README's preprocessing benchmark). Here the vocabulary
itself counts documents: each product's distinct tokens go to ``tft.vocabulary``
with ``store_frequency``, which ranks the tokens by the number of products that hold
them and writes that number beside each token, and the transform reads both back
from the vocabulary file. One pass; the weights are ``tft.tfidf``'s:

    weight(term, product) = count(term, product) / tokens(product)
                            * (1 + log((products + 1) / (products holding term + 1)))

Two differences from ``tft.tfidf``, both deliberate:
- the top-k vocabulary ranks tokens by document frequency, not by total count (a
  product that repeats a word does not push it into the vocabulary);
- the out-of-vocabulary bucket's document frequency is not counted (that would take
  the second pass): it weighs as a term every product holds (idf 1, the lowest), so
  rare words say "there were rare words" without outweighing the known ones.
"""
from __future__ import annotations

import contextlib

import tensorflow as tf
import tensorflow_transform as tft


def _distinct_per_product(tokens: tf.SparseTensor) -> tf.Tensor:
    """Each product's distinct tokens, flattened (a token counted once per product)."""
    rows = tf.strings.as_string(tokens.indices[:, 0])
    # cleaned tokens hold letters and digits only, so a space cannot be part of one
    distinct, at = tf.unique(tf.strings.join([rows, tokens.values], separator=" "))
    first = tf.math.unsorted_segment_min(tf.range(tf.size(at)), at, tf.size(distinct))
    return tf.gather(tokens.values, first)


# A vocabulary file with frequencies reads ``frequency token`` on each line.
_FREQUENCY, _TOKEN = 0, 1


def _lifted(make_table):
    """A ``lookup_fn`` for ``tft.apply_vocabulary``: the table is built once, outside the
    traced function, once the vocabulary file is known (as TF Transform's own lookups
    are), not on every batch."""
    def lookup(tokens, vocab_path):
        with contextlib.ExitStack() as stack:
            if tf.inside_function() and tf.get_static_value(vocab_path) is not None:
                stack.enter_context(tf.init_scope())
            table = make_table(vocab_path)
            size = table.size()
        return table.lookup(tokens), size
    return lookup


def _id_table(num_oov_buckets: int):
    """token -> its line in the vocabulary; out-of-vocabulary tokens to the buckets after it."""
    return _lifted(lambda path: tf.lookup.StaticVocabularyTable(
        tf.lookup.TextFileInitializer(path, tf.string, _TOKEN, tf.int64,
                                      tf.lookup.TextFileIndex.LINE_NUMBER, delimiter=" "),
        num_oov_buckets=num_oov_buckets))


# token -> the number of products holding it; -1 out of the vocabulary
_frequency_table = _lifted(lambda path: tf.lookup.StaticHashTable(
    tf.lookup.TextFileInitializer(path, tf.string, _TOKEN, tf.int64, _FREQUENCY, delimiter=" "),
    default_value=-1))


def tfidf(tokens: tf.SparseTensor, top_k: int, num_oov_buckets: int, vocab_filename: str,
          ) -> tuple[tf.SparseTensor, tf.SparseTensor]:
    """A batch of tokenised products -> (term ids, TF-IDF weights), both
    ``[products, distinct terms]``, a product's distinct terms in the order they first
    appear; ids past ``top_k`` are the out-of-vocabulary buckets."""
    vocab_path = tft.vocabulary(_distinct_per_product(tokens), top_k=top_k, store_frequency=True,
                                vocab_filename=vocab_filename)
    products = tft.sum(tf.expand_dims(tokens.dense_shape[0], 0), name=f"{vocab_filename}_products")

    term_ids = tft.apply_vocabulary(tokens.values, vocab_path,
                                    lookup_fn=_id_table(num_oov_buckets))
    frequency = tft.apply_vocabulary(tokens.values, vocab_path, lookup_fn=_frequency_table)
    rows = tokens.indices[:, 0]
    # one entry per (product, term): how often the term occurs in the product
    stride = tf.cast(top_k + num_oov_buckets, tf.int64)
    pairs, at, counts = tf.unique_with_counts(rows * stride + term_ids)
    pair_rows, pair_ids = pairs // stride, pairs % stride
    pair_frequency = tf.math.unsorted_segment_max(frequency, at, tf.size(pairs))
    # term frequency: the term's share of the product's tokens
    lengths = tf.math.unsorted_segment_sum(tf.ones_like(rows), rows, tokens.dense_shape[0])
    term_frequency = tf.cast(counts, tf.float64) / tf.cast(tf.gather(lengths, pair_rows),
                                                             tf.float64)
    # smoothed idf; the out-of-vocabulary buckets (frequency -1) as held by every product
    n = tf.cast(products, tf.float64)
    held_by = tf.where(pair_frequency < 0, n, tf.cast(pair_frequency, tf.float64))
    idf = 1.0 + tf.math.log((n + 1.0) / (held_by + 1.0))
    # [product, position among its distinct terms]
    position = tft.segment_indices(pair_rows)
    indices = tf.stack([pair_rows, position], axis=1)
    shape = tf.stack([tokens.dense_shape[0],
                      tf.reduce_max(tf.concat([position, [-1]], axis=0)) + 1])
    return (tf.SparseTensor(indices, pair_ids, shape),
            tf.SparseTensor(indices, tf.cast(term_frequency * idf, tf.float32), shape))
