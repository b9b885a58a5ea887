"""Sparse rule targets from the input pipeline to the SSL-GAN's losses: the same losses and
gradients as the dense multi-hot targets."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import data
from trainer.hparams import HParams
from trainer.rule_classes import RuleClassMap
from trainer.sparse_targets import mean_bce_rows
from trainer.ssl_gan import discriminator_losses

RULES = ["Tops", "Tops > Knits", "Tops > Shirts", "Shoes", "Shoes > Boots", "Bags"]
CLASSES = ["Tops > Knits", "Tops > Shirts", "Shoes", "Bags"]


def sparse_and_dense(rows: list[list[int]], width: int):
    cells = sorted({(r, c) for r, row in enumerate(rows) for c in row})
    sparse = tf.SparseTensor(np.array(cells, "int64").reshape(-1, 2), tf.ones(len(cells)),
                             [len(rows), width])
    return sparse, tf.sparse.to_dense(sparse)


def test_the_sparse_bce_and_its_gradient_are_the_dense_ones():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 6, (5, 40)).astype("float32")
    logits[0, :3] = [30.0, -30.0, 16.0]  # far out on both sides
    rows = [[0, 1, 7], [], [39], [2, 3, 4, 5], [1]]  # row 1 has no category at all
    sparse, dense = sparse_and_dense(rows, 40)
    z = tf.Variable(logits)
    upstream = tf.constant(rng.uniform(0.5, 2.0, 5).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        ours = mean_bce_rows(sparse, z)
        theirs = tf.reduce_mean(keras.ops.binary_crossentropy(dense, z, from_logits=True), -1)
        ours_weighted, theirs_weighted = (tf.reduce_sum(v * upstream) for v in (ours, theirs))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours_weighted, z).numpy(),
                               tape.gradient(theirs_weighted, z).numpy(), atol=1e-7)


class Labels:
    """The one thing ``to_targets`` asks of the vocabularies: the rule categories."""

    def labels(self, objective):
        return RULES


def test_the_pipeline_makes_the_same_targets_sparse_as_dense():
    # per row the rule label ids as parsed (a repeated id, a row without any)
    ids = tf.ragged.constant([[1, 0, 1], [], [5], [3, 4]], dtype=tf.int64).to_sparse()
    batch = {"rule_based_labels": ids, "exclusive_label": tf.constant([0, -1, 3, 2], tf.int64)}
    dense_targets, dense_weights = data.to_targets(batch, ["exclusive", "rule_based"], Labels())
    targets, weights = data.to_targets(batch, ["exclusive", "rule_based"], Labels(),
                                       sparse_rules=True)
    assert isinstance(targets["rule_based"], tf.SparseTensor)
    assert targets["rule_based"].shape.as_list()[-1] == len(RULES)
    np.testing.assert_array_equal(tf.sparse.to_dense(targets["rule_based"]).numpy(),
                                  dense_targets["rule_based"].numpy())
    expected = np.zeros((4, len(RULES)), "float32")
    for row, found in enumerate([[0, 1], [], [5], [3, 4]]):
        expected[row, found] = 1
    np.testing.assert_array_equal(dense_targets["rule_based"].numpy(), expected)
    np.testing.assert_array_equal(weights["rule_based"].numpy(), [1, 0, 1, 1])
    np.testing.assert_array_equal(weights["rule_based"].numpy(),
                                  dense_weights["rule_based"].numpy())
    np.testing.assert_array_equal(targets["exclusive"].numpy(), dense_targets["exclusive"].numpy())


@pytest.mark.parametrize("confusion", [False, True])
def test_every_loss_term_is_the_same_with_sparse_rule_targets(confusion):
    rng = np.random.default_rng(1)
    rows = [[0, 1], [0], [3, 4], [], [5], [2, 0]]  # "Tops" alone names both tops
    sparse, dense = sparse_and_dense(rows, len(RULES))
    real = {"exclusive": tf.constant(rng.normal(0, 2, (6, 4)), tf.float32),
            "rule_based": tf.constant(rng.normal(0, 3, (6, len(RULES))), tf.float32),
            "features": tf.zeros((6, 3)), "real_fake": tf.zeros((6, 1))}
    fake = {"exclusive": tf.zeros((2, 4)), "rule_based": tf.zeros((2, len(RULES))),
            "features": tf.zeros((2, 3)), "real_fake": tf.zeros((2, 1))}
    weights = {"exclusive": tf.constant([1.0, 0, 0, 1, 0, 0]),
               "rule_based": tf.constant([1.0, 1, 1, 0, 1, 1])}
    hparams = HParams(rule_confusion=confusion)
    mapping = RuleClassMap.build(RULES, CLASSES)
    matrix = tf.nn.softmax(tf.eye(4) * 4.0) if confusion else None
    terms = [discriminator_losses(real, fake, {"exclusive": tf.constant([0, 0, 2, 1, 0, 0]),
                                               "rule_based": targets}, weights, hparams,
                                  rule_class_map=mapping, confusion=matrix)
             for targets in (dense, sparse)]
    assert set(terms[0]) == set(terms[1]) >= {"rule_based", "rule_to_exclusive"}
    for name in terms[0]:
        assert float(terms[1][name]) == pytest.approx(float(terms[0][name]), rel=1e-5), name


def test_the_rows_without_rule_labels_are_left_out_of_the_rule_head_with_the_same_losses():
    """With sparse targets the rule-based logits are computed for the rows with rule labels
    only: every loss term and every gradient is the one of all rows' logits, masked."""
    from trainer.model import ModelInput
    from trainer.sparse_targets import rows_with_targets
    from trainer.ssl_gan import SSLGAN, build_ssl_gan

    rows = [[0, 1], [], [3, 4], [], [5], [2, 0]]  # rows 1 and 3 without rule labels
    sparse, _ = sparse_and_dense(rows, len(RULES))
    kept, held = rows_with_targets(sparse)
    np.testing.assert_array_equal(kept.numpy(), [0, 2, 4, 5])
    np.testing.assert_array_equal(tf.sparse.to_dense(held).numpy(),
                                  tf.sparse.to_dense(sparse).numpy()[[0, 2, 4, 5]])
    hparams = HParams(hidden_units=(8,), dropout=0.0, input_noise=0.0, seed=3)
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 10)],
                          {"exclusive": 4, "rule_based": len(RULES)},
                          rule_class_map=RuleClassMap.build(RULES, CLASSES))
    inputs = {"x": tf.constant(np.random.default_rng(2).random((6, 10)), tf.float32)}
    targets = {"exclusive": tf.constant([0, 0, 2, 1, 0, 0]), "rule_based": sparse}
    weights = {"exclusive": tf.constant([1.0, 0, 0, 1, 0, 0]),
               "rule_based": tf.constant([1.0, 0, 1, 0, 1, 1])}
    noise = tf.zeros((6, hparams.noise_dim))
    variables = model._d_variables()

    def losses_and_gradients():
        with tf.GradientTape() as tape:
            d_loss, _, terms = model._step_losses(inputs, targets, weights, noise, None)
        return terms, tape.gradient(d_loss, variables)

    held_terms, held_gradients = losses_and_gradients()
    every_row = SSLGAN._rows_with_rule_labels
    SSLGAN._rows_with_rule_labels = lambda self, targets, sample: None
    try:
        all_terms, all_gradients = losses_and_gradients()
    finally:
        SSLGAN._rows_with_rule_labels = every_row
    assert set(held_terms) == set(all_terms) >= {"rule_based", "rule_to_exclusive"}
    for name in all_terms:
        assert float(held_terms[name]) == pytest.approx(float(all_terms[name]), rel=1e-5), name
    for held_gradient, all_gradient in zip(held_gradients, all_gradients):
        np.testing.assert_allclose(tf.convert_to_tensor(held_gradient).numpy(),
                                   tf.convert_to_tensor(all_gradient).numpy(), atol=1e-6)


def test_a_supervised_model_trains_on_sparse_rule_targets_and_is_saved_with_probabilities():
    """The DNN's compiled rule-based loss reads sparse targets with the same loss and
    gradients as dense ones; the model trains on logits and ``classifier`` adds the sigmoid."""
    from trainer.model import ModelInput, build_model, classifier

    rows = [[0, 1], [], [3, 4], [5], [2, 0]]
    sparse, dense = sparse_and_dense(rows, len(RULES))
    hparams = HParams(model_type="dnn", hidden_units=(8,), dropout=0.0, seed=3)
    specs, classes = [ModelInput("x", "vector", 10)], {"exclusive": 4, "rule_based": len(RULES)}
    x = {"x": tf.constant(np.random.default_rng(4).random((5, 10)), tf.float32)}
    exclusive = tf.constant([0, 1, 2, 3, 0])
    weights = {"exclusive": tf.ones(5), "rule_based": tf.constant([1.0, 0, 1, 1, 1])}
    first = build_model(hparams, specs, classes)
    second = build_model(hparams, specs, classes)
    second.set_weights(first.get_weights())
    losses = [model.train_on_batch(x, {"exclusive": exclusive, "rule_based": targets}, weights,
                                   return_dict=True)
              for model, targets in ((first, dense), (second, sparse))]
    for name in losses[0]:
        assert losses[1][name] == pytest.approx(losses[0][name], rel=1e-5), name
    for after_dense, after_sparse in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_allclose(after_sparse, after_dense, atol=1e-6)  # the same step taken
    logits = first(x)["rule_based"].numpy()
    probabilities = classifier(first)(x)
    np.testing.assert_allclose(probabilities["rule_based"].numpy(), 1 / (1 + np.exp(-logits)),
                               rtol=1e-5)
    np.testing.assert_allclose(probabilities["exclusive"].numpy(),
                               first(x)["exclusive"].numpy(), rtol=1e-6)
