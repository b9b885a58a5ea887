"""The semi-supervised GAN's losses, its learning from few labels, schedules and resuming."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from shared_config import storage
from trainer import training
from trainer.hparams import HParams
from trainer.model import ModelInput, build_model
from trainer.ssl_gan import (
    build_ssl_gan,
    candidate_mass_loss,
    consistency_loss,
    contrastive_loss,
    discriminator_losses,
    generator_loss,
    interpolation_loss,
    interpolation_targets,
    sample_rule_categories,
    token_dropout,
)

HP = HParams(hidden_units=(32,), epochs=1, batch_size=32, input_noise=0.0, dropout=0.0,
             gan_head="class_logits", entropy_weight=0.0)


def test_supervised_losses_only_count_the_rows_that_have_labels():
    real = {"exclusive": ops.convert_to_tensor([[5.0, 0.0], [0.0, 5.0]]),
            "rule_based": ops.convert_to_tensor([[9.0], [-9.0]]), "features": ops.zeros((2, 3))}
    fake = {"exclusive": ops.convert_to_tensor([[-20.0, -20.0]]),
            "rule_based": ops.convert_to_tensor([[0.0]]), "features": ops.zeros((1, 3))}
    targets = {"exclusive": ops.convert_to_tensor([0, 0]),
               "rule_based": ops.convert_to_tensor([[1.0], [1.0]])}
    weights = {"exclusive": ops.convert_to_tensor([1.0, 0.0]),
               "rule_based": ops.convert_to_tensor([1.0, 0.0])}
    terms = {k: float(v) for k, v in discriminator_losses(real, fake, targets, weights, HP).items()}
    # row 2 is wrong on both objectives, but it has no labels: only row 1 counts
    assert terms["exclusive"] == pytest.approx(np.log1p(np.exp(-5.0)), rel=1e-4)
    assert terms["rule_based"] == pytest.approx(np.log1p(np.exp(-9.0)), rel=1e-3, abs=1e-4)
    # real rows look real (logsumexp >> 0), the fake row looks fake: a small real/fake loss
    assert terms["real_fake"] < 0.01
    assert "rule_fake" not in terms and "entropy" not in terms
    options = HParams(rule_gan_signal="no_category", entropy_weight=0.5, gan_head="class_logits")
    with_options = discriminator_losses(real, fake, targets, weights, options)
    assert float(with_options["rule_fake"]) == pytest.approx(np.log(2), rel=1e-4)
    assert float(with_options["entropy"]) > 0
    fake_looks_real = {**fake, "exclusive": ops.convert_to_tensor([[20.0, 20.0]])}
    assert float(discriminator_losses(real, fake_looks_real, targets, weights, HP)["real_fake"]) > 10
    supervised_only = HParams(real_fake_weight=0.0, gan_head="class_logits")
    assert float(discriminator_losses(real, fake_looks_real, targets, weights,
                                      supervised_only)["real_fake"]) == 0.0


def test_label_smoothing_spreads_part_of_the_labels_target_over_every_class():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], "float32")
    real = {"exclusive": ops.convert_to_tensor(logits), "features": ops.zeros((2, 3))}
    fake = {"exclusive": ops.convert_to_tensor([[-20.0, -20.0, -20.0]]),
            "features": ops.zeros((1, 3))}
    targets = {"exclusive": ops.convert_to_tensor([0, 2])}
    weights = {"exclusive": ops.convert_to_tensor([1.0, 0.0])}  # the second row unlabelled
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    smoothed = 0.8 * np.eye(3)[0] + 0.2 / 3  # 0.2 of the target spread over the 3 classes
    terms = discriminator_losses(real, fake, targets, weights, HParams(label_smoothing=0.2, gan_head="class_logits"))
    assert float(terms["exclusive"]) == pytest.approx(-(smoothed * log_p[0]).sum(), rel=1e-5)
    plain = discriminator_losses(real, fake, targets, weights, HP)
    assert float(plain["exclusive"]) == pytest.approx(-log_p[0, 0], rel=1e-5)


def test_the_partial_label_loss_is_minus_log_the_candidates_mass():
    logits = ops.convert_to_tensor([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    candidates = ops.convert_to_tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    loss = np.asarray(candidate_mass_loss(logits, candidates))
    assert loss[0] == pytest.approx(-np.log(p[1]), rel=1e-5)  # one candidate: cross-entropy
    assert loss[1] == pytest.approx(-np.log(p[1] + p[2]), rel=1e-5)  # either will do
    assert loss[2] == 0.0  # no candidate, no loss


def test_rule_labels_teach_the_exclusive_head_where_no_human_label_is():
    # two rule categories: the first names class 1, the second (a parent) names none
    rule_class_map = ops.convert_to_tensor([[0.0, 1.0], [0.0, 0.0]])
    real = {"exclusive": ops.convert_to_tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0]]),
            "rule_based": ops.zeros((3, 2)), "features": ops.zeros((3, 2))}
    fake = {"exclusive": ops.zeros((1, 2)), "rule_based": ops.zeros((1, 2)),
            "features": ops.zeros((1, 2))}
    targets = {"exclusive": ops.convert_to_tensor([0, 0, 0]),
               "rule_based": ops.convert_to_tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])}
    # row 0: human label and rule; row 1: rule naming class 1 only; row 2: a parent rule only
    weights = {"exclusive": ops.convert_to_tensor([1.0, 0.0, 0.0]),
               "rule_based": ops.convert_to_tensor([1.0, 1.0, 1.0])}
    as_truth = HParams(rule_confusion=False, rule_to_exclusive_weight=2.0, gan_head="class_logits")
    terms = discriminator_losses(real, fake, targets, weights, as_truth,
                                 rule_class_map=rule_class_map)
    # only row 1 counts (row 0 has a human label, row 2's rule names no class)
    assert float(terms["rule_to_exclusive"]) == pytest.approx(2.0 * np.log1p(np.exp(3.0)), rel=1e-5)
    off = HParams(rule_to_exclusive_weight=0.0, gan_head="class_logits")
    assert "rule_to_exclusive" not in discriminator_losses(real, fake, targets, weights, off,
                                                           rule_class_map=rule_class_map)
    # with a confusion saying the rules name class 1 for every product, naming it costs nothing
    confusion = ops.convert_to_tensor([[0.0, 1.0], [0.0, 1.0]])
    learnt = HParams(rule_confusion=True, rule_to_exclusive_weight=1.0, gan_head="class_logits",
                     confusion_from_labels=False)
    terms = discriminator_losses(real, fake, targets, weights, learnt,
                                 rule_class_map=rule_class_map, confusion=confusion)
    assert float(terms["rule_to_exclusive"]) == pytest.approx(0.0, abs=1e-5)
    # an identity confusion is the rules taken as the truth (rows 0 and 1 count now)
    terms = discriminator_losses(real, fake, targets, weights, learnt,
                                 rule_class_map=rule_class_map, confusion=ops.eye(2))
    assert float(terms["rule_to_exclusive"]) == pytest.approx(np.log1p(np.exp(3.0)), rel=1e-4)


def test_with_confusion_from_labels_a_labelled_row_teaches_the_confusion_not_its_logits():
    rule_class_map = ops.convert_to_tensor([[0.0, 1.0]])
    logits = tf.Variable([[3.0, 0.0], [3.0, 0.0]])
    fake = {"exclusive": ops.zeros((1, 2)), "rule_based": ops.zeros((1, 1)),
            "features": ops.zeros((1, 2))}
    # both rows' rules name class 1; row 0's human label says class 0, row 1 has none
    targets = {"exclusive": ops.convert_to_tensor([0, 0]),
               "rule_based": ops.convert_to_tensor([[1.0], [1.0]])}
    weights = {"exclusive": ops.convert_to_tensor([1.0, 0.0]),
               "rule_based": ops.convert_to_tensor([1.0, 1.0])}
    confusion_logits = tf.Variable([[2.0, 0.0], [0.0, 2.0]])

    def gradients(hparams):
        with tf.GradientTape() as tape:
            real = {"exclusive": logits, "rule_based": ops.zeros((2, 1)),
                    "features": ops.zeros((2, 2))}
            terms = discriminator_losses(real, fake, targets, weights, hparams,
                                         rule_class_map=rule_class_map,
                                         confusion=ops.softmax(confusion_logits, axis=-1))
        return [np.asarray(g) for g in tape.gradient(terms["rule_to_exclusive"],
                                                     [logits, confusion_logits])]

    base = HParams(rule_confusion=True, gan_head="class_logits", confusion_from_labels=False)
    logit_grad, confusion_grad = gradients(base)
    assert np.abs(logit_grad[0]).sum() > 0  # without it the rules pull on the labelled row too
    logit_grad, confusion_grad = gradients(HParams(rule_confusion=True, gan_head="class_logits"))
    assert np.abs(logit_grad[0]).sum() == 0  # the human label wins
    assert np.abs(logit_grad[1]).sum() > 0  # the unlabelled row still learns from its rules
    # the labelled row (true class 0, rules say 1) raises p(rules name 1 | class 0)
    assert confusion_grad[0, 1] < 0


def test_a_sample_of_rule_categories_keeps_every_one_a_row_has_and_estimates_the_full_loss():
    rng = np.random.default_rng(0)
    targets = np.zeros((6, 60), "float32")
    targets[np.arange(6), [3, 3, 10, 41, 59, 10]] = 1  # the batch holds 4 categories
    targets[0, 7] = 1
    logits = rng.normal(0, 2, (6, 60)).astype("float32")
    weights = {"rule_based": ops.ones((6,))}
    rule_class_map = np.zeros((60, 3), "float32")
    rule_class_map[[3, 7, 41], [0, 1, 2]] = 1  # categories naming exclusive classes
    hparams = HParams(confusion_from_labels=False, gan_head="class_logits")
    full = discriminator_losses({"exclusive": ops.zeros((6, 3)), "rule_based": logits},
                                {"exclusive": ops.zeros((1, 3))}, {"rule_based": targets}, weights,
                                hparams, rule_class_map=rule_class_map)
    seed, estimates = keras.random.SeedGenerator(1), []
    for _ in range(300):
        columns, column_weights = sample_rule_categories(ops.convert_to_tensor(targets), 12, seed)
        columns, column_weights = np.asarray(columns), np.asarray(column_weights)
        assert len(set(columns.tolist())) == 12
        assert {3, 7, 10, 41, 59} <= set(columns.tolist())  # every category a row has
        held = np.isin(columns, [3, 7, 10, 41, 59])
        assert np.allclose(column_weights[held], 1.0)
        assert np.allclose(column_weights[~held], (60 - 5) / (12 - 5))  # the rest, reweighted
        sampled = discriminator_losses(
            {"exclusive": ops.zeros((6, 3)), "rule_based": logits[:, columns]},
            {"exclusive": ops.zeros((1, 3))}, {"rule_based": targets}, weights, hparams,
            rule_class_map=rule_class_map, rule_sample=(columns, column_weights))
        # the classes the rules name come out the same from the sample
        assert float(sampled["rule_to_exclusive"]) == pytest.approx(
            float(full["rule_to_exclusive"]), rel=1e-6)
        estimates.append(float(sampled["rule_based"]))
    # unbiased: the estimates average to the loss over all 60 categories
    assert np.mean(estimates) == pytest.approx(float(full["rule_based"]), rel=0.03)
    assert np.std(estimates) > 0  # (it is an estimate, not the full loss again)


def test_the_ssl_gan_learns_the_rule_categories_from_a_sample_of_them():
    vectors, labels = blobs(512, seed=5)
    rules = np.zeros((512, 40), "float32")
    rules[np.arange(512), np.where(labels == 0, 3, 17)] = 1  # the rules name one category a class
    rows = tf.data.Dataset.from_tensor_slices((
        {"x": vectors}, {"exclusive": labels, "rule_based": rules},
        {"exclusive": np.zeros(512, "float32"), "rule_based": np.ones(512, "float32")}))
    hparams = HParams(hidden_units=(16,), dropout=0.0, input_noise=0.0, seed=4,
                      learning_rate=1e-2, rule_sampled_categories=6)
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 20)],
                          {"exclusive": 2, "rule_based": 40})
    model.fit(rows.shuffle(512, seed=0).batch(32).repeat(), steps_per_epoch=16, epochs=12,
              verbose=0)
    scores = model.classifier()({"x": vectors})["rule_based"].numpy()
    assert (scores.argmax(axis=1) == np.where(labels == 0, 3, 17)).mean() > 0.95
    others = np.delete(scores, [3, 17], axis=1)
    assert others.max() < 0.3  # the 38 categories no product has, 4 a step, learnt as no


def test_logit_adjustment_and_balancing_favour_the_rare_class():
    real = {"exclusive": ops.convert_to_tensor([[0.0, 0.0], [0.0, 0.0]]),
            "rule_based": ops.zeros((2, 1)), "features": ops.zeros((2, 2))}
    fake = {"exclusive": ops.zeros((1, 2)), "rule_based": ops.zeros((1, 1)),
            "features": ops.zeros((1, 2))}
    targets, weights = {"exclusive": ops.convert_to_tensor([0, 1])}, {
        "exclusive": ops.convert_to_tensor([1.0, 1.0])}
    log_prior = ops.log(ops.convert_to_tensor([0.9, 0.1]))
    plain = float(discriminator_losses(real, fake, targets, weights,
                                       HParams(exclusive_loss="plain", gan_head="class_logits"),
                                       log_prior=log_prior)["exclusive"])
    assert plain == pytest.approx(np.log(2), rel=1e-5)
    adjusted = float(discriminator_losses(real, fake, targets, weights,
                                          HParams(exclusive_loss="logit_adjusted", gan_head="class_logits"),
                                          log_prior=log_prior)["exclusive"])
    assert adjusted == pytest.approx((-np.log(0.9) - np.log(0.1)) / 2, rel=1e-5)
    balanced = float(discriminator_losses(real, fake, targets, weights,
                                          HParams(exclusive_loss="balanced", gan_head="class_logits"),
                                          log_prior=log_prior)["exclusive"])
    # rows weighted 1 / (2 x prior): the rare class's row counts nine times the other's
    assert balanced == pytest.approx(np.log(2) * (1 / 1.8 + 1 / 0.2) / 2, rel=1e-5)


def test_the_contrastive_loss_is_simcses_cross_entropy_over_the_batch_both_ways():
    rng = np.random.default_rng(3)
    first, second = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in (first, second)]
    similarity = unit[0] @ unit[1].T / 0.1
    one_way = -np.log(np.exp(np.diag(similarity)) / np.exp(similarity).sum(axis=1))
    other_way = -np.log(np.exp(np.diag(similarity)) / np.exp(similarity).sum(axis=0))
    got = np.asarray(contrastive_loss(ops.convert_to_tensor(first, "float32"),
                                      ops.convert_to_tensor(second, "float32"), 0.1))
    np.testing.assert_allclose(got, (one_way + other_way) / 2, rtol=1e-4)
    # two copies that agree, each far from the other rows, cost almost nothing
    assert float(np.mean(contrastive_loss(ops.eye(5), ops.eye(5), 0.1))) < 1e-3


@pytest.mark.parametrize("pretraining, loss", [("denoising", "reconstruction_loss"),
                                               ("contrastive", "contrastive_loss")])
def test_the_encoder_pretraining_learns_the_catalogue(pretraining, loss):
    rng = np.random.default_rng(0)
    if pretraining == "denoising":  # hidden words to recover from the product's kind
        topics = rng.random((4, 40)) < 0.2  # four "kinds of product", each with its own words
        x = (topics[rng.integers(0, 4, 512)] * rng.random((512, 40))).astype("float32")
    else:  # products to tell apart: each has words of its own
        x = ((rng.random((512, 40)) < 0.25) * rng.random((512, 40))).astype("float32")
    hparams = HParams(hidden_units=(16,), encoder_pretrain_epochs=4, objectives=("exclusive",),
                      learning_rate=0.01, encoder_pretraining=pretraining)
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 40)], {"exclusive": 4,
                                                                      "rule_based": 1})
    before = [w.numpy().copy() for w in model.encoder.weights]
    rows = tf.data.Dataset.from_tensor_slices(({"x": x}, {"exclusive": np.zeros(512, "int64")}))
    result = model.pretrain_encoder(rows.repeat().batch(32), 16, hparams.encoder_pretrain_epochs)
    losses = result[loss]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.8
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, model.encoder.weights))
    # the classifier still reads the same, now pretrained, encoder
    assert model.classifier()({"x": x[:2]})["exclusive"].shape == (2, 4)


def test_early_stopping_keeps_the_best_epochs_weights():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    scores = iter([0, 1, 0, 0])  # epoch 2 is best: predictions right then only
    labels = np.array([1])
    best = training.BestOnValidation(lambda m: np.array([next(scores)]), labels, patience=2)
    best.set_model(model)
    for epoch in range(4):
        model.layers[0].kernel.assign([[float(epoch)]])
        best.on_epoch_end(epoch)
        if best.stopped:
            break
    assert best.stopped and epoch == 3 and best.best_epoch == 1
    best.restore_best()
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 1.0


def test_with_weight_averaging_validation_scores_the_averages_and_training_goes_on():
    vectors, labels = blobs(256, seed=3)
    hparams = HParams(hidden_units=(8,), batch_size=32, weight_averaging=0.9,
                      objectives=("exclusive",))
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 20)],
                          {"exclusive": 2, "rule_based": 1})
    model.fit(dataset(vectors, labels, labelled=64).batch(32), epochs=1, verbose=0)
    raw = [w.numpy().copy() for w in model.weights]
    seen = []

    def predict(m):  # what validation scores: the averaged weights, not the last step's
        seen.append([w.numpy().copy() for w in m.weights])
        return labels[:4]

    best = training.BestOnValidation(predict, labels[:4], patience=1)
    best.set_model(model)
    best.on_epoch_end(0)
    assert any(not np.allclose(a, b) for a, b in zip(seen[0], raw))
    assert all(np.allclose(a, w.numpy()) for a, w in zip(raw, model.weights))  # put back
    best.restore_best()
    assert all(np.allclose(a, w.numpy()) for a, w in zip(seen[0], model.weights))


def test_weight_decay_shrinks_the_discriminators_kernels_and_leaves_the_biases():
    hparams = HParams(hidden_units=(8,), learning_rate=0.01, weight_decay=0.5)
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 20)],
                          {"exclusive": 2, "rule_based": 2},
                          rule_class_map=ops.convert_to_tensor([[1.0, 0.0], [0.0, 1.0]]))
    variables = model._d_variables()
    before = [v.numpy().copy() for v in variables]
    # a zero gradient moves nothing through Adam: what changes is the decay alone
    model.d_optimizer.apply_gradients([(ops.zeros_like(v), v) for v in variables])
    for variable, old in zip(variables, before):
        kept = "bias" in variable.path or "confusion" in variable.path
        factor = 1.0 if kept else 1 - 0.01 * 0.5
        np.testing.assert_allclose(variable.numpy(), old * factor, rtol=1e-6)
    assert any("kernel" in v.path for v in variables)
    assert any("confusion" in v.path for v in variables)
    with pytest.raises(ValueError, match="weight_decay"):
        HParams(weight_decay=-1.0)


def test_a_separate_real_fake_unit_leaves_the_class_logits_out_of_it():
    outputs = lambda real_fake, exclusive: {
        "exclusive": ops.convert_to_tensor(exclusive), "features": ops.zeros((1, 3)),
        "rule_based": ops.zeros((1, 1)), "real_fake": ops.convert_to_tensor(real_fake)}
    separate = HParams(gan_head="separate_unit")
    confident = discriminator_losses(outputs([[9.0]], [[0.0, 0.0]]), outputs([[-9.0]], [[9.0, 9.0]]),
                                     {}, {}, separate)
    assert float(confident["real_fake"]) < 0.001  # the class logits say "real" for the fake row
    unsure = discriminator_losses(outputs([[0.0]], [[9.0, 9.0]]), outputs([[0.0]], [[-9.0, -9.0]]),
                                  {}, {}, separate)
    assert float(unsure["real_fake"]) == pytest.approx(2 * np.log(2), rel=1e-4)


@pytest.mark.parametrize("share, encoder_moves", [(0.0, False), (1.0, True)])
def test_the_gan_teaches_the_encoder_only_its_share(share, encoder_moves):
    vectors, labels = blobs(64, seed=5)
    hparams = HParams(hidden_units=(8,), dropout=0.0, input_noise=0.0, gan_encoder_gradient=share)
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 20)], {"exclusive": 2, "rule_based": 1})
    before = [w.numpy().copy() for w in model.encoder.trainable_weights]
    discriminator_before = [w.numpy().copy() for w in model.discriminator.trainable_weights]
    model.fit(dataset(vectors, labels, labelled=0).batch(64), epochs=1, verbose=0)  # no labels
    moved = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.encoder.trainable_weights)]
    assert any(moved) == encoder_moves
    assert any(not np.allclose(a, w.numpy()) for a, w in
               zip(discriminator_before, model.discriminator.trainable_weights))


def test_feature_matching_is_zero_when_the_means_agree():
    features = ops.convert_to_tensor([[1.0, 2.0], [3.0, 4.0]])
    same = {"features": features, "exclusive": ops.zeros((2, 2))}
    shifted = {"features": features + 1.0, "exclusive": ops.zeros((2, 2))}
    assert float(generator_loss(same, same, HP)) == pytest.approx(0.0)
    assert float(generator_loss(same, shifted, HP)) == pytest.approx(1.0)


@pytest.fixture(autouse=True)
def fixed_seeds():
    keras.utils.set_random_seed(0)  # weight initialisers and dropout masks too


def blobs(n: int, seed: int):
    """Two well separated classes in 20 dimensions; most rows unlabelled."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    vectors = rng.normal(0, 1, (n, 20)).astype("float32") + labels[:, None] * 4.0
    return vectors, labels


def dataset(vectors, labels, labelled: int):
    weights = np.zeros(len(labels), "float32")
    weights[:labelled] = 1
    rules = np.zeros((len(labels), 1), "float32")
    return tf.data.Dataset.from_tensor_slices((
        {"x": vectors}, {"exclusive": labels, "rule_based": rules},
        {"exclusive": weights, "rule_based": np.zeros(len(labels), "float32")}))


def test_the_ssl_gan_learns_from_ten_labels_and_the_unlabelled_rest():
    vectors, labels = blobs(1200, seed=0)
    hparams = HParams(hidden_units=(32,), batch_size=64, dropout=0.0, seed=1)
    model = build_ssl_gan(hparams, [ModelInput("x", "vector", 20)],
                          {"exclusive": 2, "rule_based": 1})
    model.fit(dataset(vectors[:1000], labels[:1000], labelled=10).shuffle(1000, seed=0)
              .batch(64).repeat(), steps_per_epoch=16, epochs=8, verbose=0)
    predicted = model.classifier()({"x": vectors[1000:]})["exclusive"].numpy().argmax(axis=1)
    assert (predicted == labels[1000:]).mean() > 0.85


@pytest.mark.parametrize("schedule", ["exclusive_only", "interleaved", "rule_then_exclusive"])
def test_schedules_switch_the_objectives_off_and_on(schedule):
    vectors, labels = blobs(8, seed=1)
    rows = dataset(vectors, labels, labelled=8).map(
        lambda x, y, w: (x, y, {**w, "rule_based": tf.ones_like(w["rule_based"])}))
    hparams = HParams(schedule=schedule, batch_size=4, pretrain_epochs=1)
    first = [{k: float(tf.reduce_sum(v)) for k, v in w.items()}
             for _, _, w in training.batches_for_epoch(rows.batch(hparams.batch_size), hparams)(0)]
    later = [{k: float(tf.reduce_sum(v)) for k, v in w.items()}
             for _, _, w in training.batches_for_epoch(rows.batch(hparams.batch_size), hparams)(1).take(2)]
    if schedule == "exclusive_only":
        assert all(w["rule_based"] == 0 and w["exclusive"] == 4 for w in first + later)
    elif schedule == "interleaved":
        assert [(w["exclusive"] > 0, w["rule_based"] > 0) for w in first] == [
            (True, False), (False, True)] * 2  # each objective's own pass over the rows
    else:
        assert all(w["exclusive"] == 0 and w["rule_based"] == 4 for w in first)
        assert all(w["exclusive"] == 4 and w["rule_based"] == 4 for w in later)


@pytest.mark.parametrize("model_type", ["dnn", "ssl_gan"])
def test_a_restarted_training_goes_on_from_the_last_epoch(tmp_path, model_type):
    vectors, labels = blobs(64, seed=2)
    rows = dataset(vectors, labels, labelled=64)
    hparams = HParams(model_type=model_type, hidden_units=(8,), epochs=3, batch_size=16)
    specs, classes = [ModelInput("x", "vector", 20)], {"exclusive": 2, "rule_based": 1}
    build = build_ssl_gan if model_type == "ssl_gan" else build_model
    model_dir = str(tmp_path) + "/model/"
    batches = training.batches_for_epoch(rows.repeat().batch(hparams.batch_size), hparams)
    first = training.fit(build(hparams, specs, classes), hparams, batches, 64, model_dir)
    loss = "d_loss" if model_type == "ssl_gan" else "loss"
    assert first["resumed_at_epoch"] == 0 and len(first["history"][loss]) == 3
    storage.write_json(model_dir + "training/progress.json", {"epochs_done": 2})  # "crashed"
    again = training.fit(build(hparams, specs, classes), hparams, batches, 64, model_dir)
    assert again["resumed_at_epoch"] == 2 and len(again["history"][loss]) == 1
    assert storage.glob(model_dir + "tensorboard/*")


@pytest.mark.parametrize("model_type", ["linear", "dnn", "wide_deep", "ssl_gan"])
def test_a_few_steps_reduce_the_loss_for_every_model_type(model_type):
    vectors, labels = blobs(512, seed=3)
    hparams = HParams(model_type=model_type, hidden_units=(16,), dropout=0.0, input_noise=0.0,
                      seed=4, learning_rate=3e-3)
    specs, classes = [ModelInput("x", "vector", 20)], {"exclusive": 2, "rule_based": 1}
    if model_type == "ssl_gan":
        model = build_ssl_gan(hparams, specs, classes)
        key = "exclusive"
    else:
        model = build_model(hparams, specs, classes)
        key = "exclusive_loss"
    rows = dataset(vectors, labels, labelled=512).batch(32).repeat()
    history = model.fit(rows, steps_per_epoch=16, epochs=4, verbose=0).history[key]
    assert history[-1] < history[0] * 0.8, history


JAX_TRAINING = """
import importlib.abc, json, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):  # as on a GPU machine without TensorFlow
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no TensorFlow here")

sys.meta_path.insert(0, NoTensorFlow())
import jax, keras, numpy as np
from trainer.hparams import HParams
from trainer.model import ModelInput
from jax.experimental import sparse
from trainer.ssl_gan import build_ssl_gan, token_dropout

assert keras.backend.backend() == "jax"
words = sparse.BCOO.fromdense(np.array([[0, 0.5, 0, 0.2], [0.7, 0, 0, 0]], "float32"))
dropped = token_dropout(words, 0.5, keras.random.SeedGenerator(0))
assert isinstance(dropped, sparse.BCOO) and (dropped.indices == words.indices).all()
rng = np.random.default_rng(0)
centres = rng.normal(0, 3, (2, 20))
y = rng.integers(0, 2, 512)
x = (centres[y] + rng.normal(0, 1, (512, 20))).astype("float32")
keras.utils.set_random_seed(4)
rules = np.zeros((512, 30), "float32")
rules[np.arange(512), y * 5] = 1  # the rules name category 0 or 5; 8 of 30 sampled a step
model = build_ssl_gan(HParams(hidden_units=(16,), dropout=0.0, input_noise=0.0, seed=4,
                              learning_rate=3e-3, rule_sampled_categories=8,
                              consistency_weight=0.5, interpolation_weight=0.5),
                      [ModelInput("x", "vector", 20)], {"exclusive": 2, "rule_based": 30})
step, state = jax.jit(model.jax_train_step()), model.jax_state()
key, losses = jax.random.PRNGKey(0), []
for i in range(150):
    rows = slice(64 * (i % 6), 64 * (i % 6) + 64)
    labelled = (np.arange(64) < 16).astype("float32")  # a quarter of each batch labelled
    data = ({"x": x[rows]}, {"exclusive": y[rows], "rule_based": rules[rows]},
            {"exclusive": labelled, "rule_based": np.ones(64, "float32")})
    key, sub = jax.random.split(key)
    state, logs = step(state, data, sub)
    losses.append(float(logs["exclusive"]))
    assert float(logs["consistency"]) >= 0 and float(logs["interpolation"]) >= 0
model.assign_jax_state(state)
outputs = model.classifier()({"x": x[384:]})
predicted = np.asarray(outputs["exclusive"]).argmax(axis=1)
rule_predicted = np.asarray(outputs["rule_based"]).argmax(axis=1)
print(json.dumps({"first": losses[0], "last": losses[-1], "accuracy": float((predicted == y[384:]).mean()),
                  "rule_accuracy": float((rule_predicted == y[384:] * 5).mean()),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def test_the_ssl_gan_trains_on_keras_jax_backend_without_tensorflow():
    """The same model and losses, the train step as a jitted JAX function: it learns, and
    nothing of TensorFlow is imported (GPU machines that have JAX and no TensorFlow)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_TRAINING], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["tensorflow"]
    assert result["last"] < result["first"] / 2
    assert result["accuracy"] > 0.9
    assert result["rule_accuracy"] > 0.9  # the rule head, trained on samples of its categories


def test_token_dropout_zeroes_words_and_keeps_a_sparse_input_sparse():
    seed = keras.random.SeedGenerator(3)
    dense = np.ones((200, 50), "float32")
    dropped = np.asarray(token_dropout(ops.convert_to_tensor(dense), 0.3, seed))
    assert set(np.unique(dropped)) == {0.0, 1.0}  # words kept as they were, or gone
    assert 0.25 < 1 - dropped.mean() < 0.35
    sparse = tf.sparse.from_dense(tf.constant([[0.0, 0.5, 0.0, 0.2], [0.7, 0.0, 0.0, 0.0]]))
    out = token_dropout(sparse, 0.5, seed)
    assert isinstance(out, tf.SparseTensor)
    assert np.array_equal(out.indices.numpy(), sparse.indices.numpy())
    assert all(v in (0.0, w) for v, w in zip(out.values.numpy(), sparse.values.numpy()))


def test_consistency_is_the_kl_from_the_sharpened_clean_prediction_to_the_noised_one():
    clean = ops.convert_to_tensor([[2.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    noisy = ops.convert_to_tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    target = np.exp([4.0, 0.0, 0.0]) / np.exp([4.0, 0.0, 0.0]).sum()  # temperature 0.5
    q = np.exp([0.0, 1.0, 0.0]) / np.exp([0.0, 1.0, 0.0]).sum()
    first = float(np.sum(target * np.log(target / q)))
    # the second row's own prediction is too unsure for the threshold 0.5: left out
    assert float(consistency_loss(clean, noisy, 0.5, 0.5)) == pytest.approx(first, rel=1e-4)
    assert float(consistency_loss(clean, clean, 1.0, 0.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("term", ["consistency", "interpolation"])
def test_an_optional_term_joins_the_discriminator_loss_when_weighted(term):
    specs = [ModelInput("x", "vector", 20)]
    x = np.random.default_rng(0).random((64, 20)).astype("float32")
    rows = tf.data.Dataset.from_tensor_slices(({"x": x}, {"exclusive": np.zeros(64, "int64")},
                                               {"exclusive": np.ones(64, "float32")}))
    for weight in (0.0, 1.0):
        model = build_ssl_gan(HParams(hidden_units=(16,), objectives=("exclusive",),
                                      **{f"{term}_weight": weight}), specs,
                              {"exclusive": 3, "rule_based": 1})
        logs = model.fit(rows.batch(32), epochs=1, verbose=0).history
        assert (logs[term][-1] > 0) == (weight > 0)


def test_interpolation_asks_a_mix_of_two_rows_for_the_same_mix_of_their_targets():
    logits = ops.convert_to_tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # row 0 labelled class 2 (its logits do not matter), row 1 unlabelled: its own prediction
    targets = interpolation_targets(logits, {"exclusive": np.array([2, 0])},
                                    {"exclusive": np.array([1.0, 0.0], "float32")})
    own = np.exp([0.0, 1.0, 0.0]) / np.exp([0.0, 1.0, 0.0]).sum()
    np.testing.assert_allclose(np.asarray(targets), [[0, 0, 1], own], rtol=1e-5)
    mixed = np.array([[0.5, 0.2, 1.0], [0.0, 0.3, -1.0]], "float32")
    share = np.array([[0.75], [0.6]], "float32")
    partner = np.array([1, 0])
    wanted = [0.75 * np.eye(3)[2] + 0.25 * own, 0.6 * own + 0.4 * np.eye(3)[2]]
    log_q = mixed - np.log(np.exp(mixed).sum(axis=1, keepdims=True))
    expected = float(np.mean(-(np.array(wanted) * log_q).sum(axis=1)))
    got = interpolation_loss(ops.convert_to_tensor(mixed), targets, partner,
                             ops.convert_to_tensor(share))
    assert float(got) == pytest.approx(expected, rel=1e-5)

