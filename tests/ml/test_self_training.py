"""Self-training: which products get pseudo-labels, and the trainer's second network."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from shared_config import storage
from shared_config.categories import candidate_classes
from tests.ml.test_preprocessing import read_examples
from tests.ml.test_trainer import preprocessed_run
from trainer import data, self_training, task, training
from trainer.controller import main as controller_main
from trainer.hparams import HParams
from trainer.self_training import PseudoLabeller, agrees_with_rules, pick_per_class, softmax


def test_pick_per_class_takes_the_surest_unlabelled_rows_of_each_class():
    probabilities = np.array([
        [0.9, 0.1, 0.0],  # class 0, labelled: never picked
        [0.8, 0.2, 0.0],  # class 0, sure
        [0.6, 0.4, 0.0],  # class 0, less sure: one too many
        [0.1, 0.5, 0.4],  # class 1
        [0.2, 0.3, 0.5],  # class 2, the only one
        [0.7, 0.3, 0.0],  # class 0, between the two
    ])
    labelled = np.array([True, False, False, False, False, False])
    picked = pick_per_class(probabilities, labelled, per_class=2)
    assert picked.tolist() == [False, True, False, True, True, True]
    assert pick_per_class(probabilities, labelled, per_class=1).tolist() == \
        [False, True, False, True, True, False]


def test_the_streamed_labeller_picks_what_the_whole_array_would():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1_000, 7)) * 3
    logits[100:120] = logits[99]  # ties: the product seen first wins, in both
    labelled = rng.random(1_000) < 0.2
    ids = [f"p{i}" for i in range(1_000)]
    expected = pick_per_class(softmax(logits), labelled, per_class=15)
    labeller = PseudoLabeller(per_class=15)
    cuts = np.sort(rng.choice(np.arange(1, 1_000), 12, replace=False))
    for part in np.split(np.arange(1_000), cuts):
        labeller.add([ids[i] for i in part], logits[part], labelled[part])
    labels = labeller.labels()
    assert sorted(labels) == sorted(ids[i] for i in np.flatnonzero(expected))
    assert all(labels[ids[i]] == logits[i].argmax() for i in np.flatnonzero(expected))
    assert labeller.seen == int((~labelled).sum())
    with pytest.raises(ValueError):
        PseudoLabeller(0)


def test_the_rules_can_veto_a_pseudo_label_they_contradict():
    probabilities = np.array([[0.7, 0.2, 0.1],   # predicted 0, the rules name 0 and 2
                              [0.1, 0.8, 0.1],   # predicted 1, the rules name 0
                              [0.2, 0.2, 0.6]])  # predicted 2, the rules name nothing
    candidates = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0]])
    assert agrees_with_rules(probabilities, candidates, "ignored").tolist() == [True] * 3
    assert agrees_with_rules(probabilities, candidates, "agree").tolist() == [True, False, True]
    assert agrees_with_rules(probabilities, candidates, "agree_only").tolist() == \
        [True, False, False]
    with pytest.raises(ValueError, match="self_training_rules"):
        agrees_with_rules(probabilities, candidates, "sometimes")
    with pytest.raises(ValueError, match="self_training_rules"):
        HParams(self_training_rules="sometimes")


def test_a_human_label_wins_over_a_pseudo_label():
    table = data.pseudo_label_table({"a": 2, "b": 1})
    batch = {"exclusive_label": tf.constant([-1, 0, -1], tf.int64),
             "id": tf.constant(["a", "b", "c"])}
    targets, weights = data.to_targets(batch, ("exclusive",), vocabs=None, pseudo_labels=table)
    assert targets["exclusive"].numpy().tolist() == [2, 0, 0]
    assert weights["exclusive"].numpy().tolist() == [1.0, 1.0, 0.0]


def test_the_trainer_self_trains_with_pseudo_labels_of_unlabelled_training_products(
        tmp_path, monkeypatch):
    paths, _ = preprocessed_run(tmp_path, monkeypatch, 300, 4, 0.2)
    flags = ["train", "--run-id", "job", "--epochs", "2", "--self-training-per-class", "3"]
    controller_main(flags)
    result = storage.read_json(paths.stats_file("train"))
    classes = len(task.vocabularies(paths).labels("exclusive"))
    pseudo = storage.read_json(result["model_dir"] + task.PSEUDO_LABELS_FILE)
    unlabelled = {e["id"].decode() for e in read_examples(paths, "catalog", "train")
                  if e["exclusive_label"] < 0}
    # pseudo-labels only for unlabelled training products, 3 a class at most
    assert 0 < len(pseudo["labels"]) <= 3 * classes
    assert set(pseudo["labels"]) <= unlabelled
    assert pseudo["unlabelled_products"] == len(unlabelled)
    per_class = {}
    for name in pseudo["labels"].values():
        per_class[name] = per_class.get(name, 0) + 1
    assert max(per_class.values()) <= 3
    assert result["self_training"]["pseudo_labels"] == len(pseudo["labels"])
    assert result["self_training"]["first_round"]["rows_per_epoch"] == result["rows_per_epoch"]
    # the second network's own progress, beside the first's
    assert storage.exists(result["model_dir"] + task.SELF_TRAINING_DIR + "training/")
    assert storage.exists(result["model_dir"] + task.MODEL_FILE)
    # the second network's batches: a share of each from the pseudo-labelled products, with
    # their pseudo-labels as targets
    vocabs = task.vocabularies(paths)
    names = vocabs.labels("exclusive")
    labels = {p: names.index(name) for p, name in pseudo["labels"].items()}
    rows = self_training.examples_of(data.tfrecord_files(paths, "catalog", "train"), vocabs,
                                     labels)
    assert len(rows) == len(labels)
    hparams = HParams(epochs=2, self_training_per_class=3)
    batches, _ = training.training_rows(paths, hparams, storage.read_json(
        paths.example_counts), rows)
    parse = data.parser(vocabs, ("exclusive",), pseudo_labels=data.pseudo_label_table(labels))
    spec = vocabs.tft_output.transformed_feature_spec()
    seen = 0
    for serialized in batches.take(3):
        ids = [i.decode() for i in tf.io.parse_example(serialized, spec)["id"].numpy()]
        _, targets, weights = parse(serialized)
        for product, target, weight in zip(ids, targets["exclusive"].numpy(),
                                           weights["exclusive"].numpy()):
            if product in labels:
                seen += 1
                assert target == labels[product] and weight == 1.0
    assert seen >= 3
    # a restarted train finds the pseudo-labels and the second network's progress
    controller_main(flags)
    again = storage.read_json(paths.stats_file("train"))
    assert again["resumed_at_epoch"] == 2
    assert storage.read_json(result["model_dir"] + task.PSEUDO_LABELS_FILE) == pseudo


def test_the_second_network_can_train_the_first_networks_best_epochs_without_a_choice(
        tmp_path, monkeypatch):
    paths, _ = preprocessed_run(tmp_path, monkeypatch, 300, 4, 0.2)
    controller_main(["train", "--run-id", "job", "--epochs", "4", "--early-stopping-patience",
                     "1", "--self-training-per-class", "3",
                     "--self-training-epochs", "first_network"])
    result = storage.read_json(paths.stats_file("train"))
    first = result["self_training"]["first_round"]["early_stopping"]
    second = storage.read_json(result["model_dir"] + task.SELF_TRAINING_DIR + "training/"
                               + training.PROGRESS_FILE)
    # as many epochs as the first network's best, and no early stopping of its own
    assert second["epochs_done"] == first["best_epoch"] <= first["epochs_run"]
    assert "early_stopping" not in result
    assert len(result["epoch_seconds"]) == first["best_epoch"]
    with pytest.raises(ValueError, match="self_training_epochs"):
        HParams(self_training_epochs="always")


def test_the_trainer_pseudo_labels_only_what_the_rules_agree_with(tmp_path, monkeypatch):
    paths, _ = preprocessed_run(tmp_path, monkeypatch, 300, 4, 0.2)
    controller_main(["train", "--run-id", "job", "--epochs", "2", "--self-training-per-class",
                     "5", "--self-training-rules", "agree_only"])
    result = storage.read_json(paths.stats_file("train"))
    pseudo = storage.read_json(result["model_dir"] + task.PSEUDO_LABELS_FILE)["labels"]
    vocabs = task.vocabularies(paths)
    rule_names, classes = vocabs.labels("rule_based"), vocabs.labels("exclusive")
    rules = {e["id"].decode(): [rule_names[i] for i in e["rule_based_labels"]]
             for e in read_examples(paths, "catalog", "train")}
    assert pseudo
    # every pseudo-label is a class the product's own rule labels name
    for product, name in pseudo.items():
        assert classes.index(name) in candidate_classes(rules[product], classes), product
