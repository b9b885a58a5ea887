"""One round of class-balanced self-training: the trained network labels the unlabelled
products it is surest of, so many per class, and a fresh network learns from those
pseudo-labels beside the human ones.

Per class, not over a threshold: a threshold hands most pseudo-labels to the classes the
network already predicts well and few to the small ones, which macro-F1 counts as much
(on the reviews' validation split, thresholds of 0.7 and 0.9 lost 1-2 points where 50 a
class gained about 3; README, "Label efficiency"). Human labels always win: a labelled
product is never pseudo-labelled. ``agrees_with_rules`` can let the legacy rules veto the
pseudo-labels they contradict (``HParams.self_training_rules``; off by default: level on
validation, README).

``PseudoLabeller`` applies the rule batch by batch to a catalogue of any size (a bounded
heap per class); ``pick_per_class`` is the same rule on an array, as a mask.
"""
from __future__ import annotations

import heapq

import numpy as np
from scipy import special

from trainer.hparams import SELF_TRAINING_RULES


def softmax(logits) -> np.ndarray:
    """Each row's class probabilities from its logits."""
    return special.softmax(np.asarray(logits, dtype="float64"), axis=1)


def agrees_with_rules(probabilities: np.ndarray, candidates: np.ndarray | None,
                      rules: str) -> np.ndarray:
    """Which rows may be pseudo-labelled, given what the rules say: ``candidates`` [rows,
    classes] 0/1, the classes each row's rule labels name (``RuleClassMap.candidates``).
    ``rules`` (``HParams.self_training_rules``): "ignored" (every row), "agree" (a row whose
    rules name classes only if its predicted class is one of them), "agree_only" (only rows
    whose rules name the predicted class)."""
    rows = len(probabilities)
    if rules == "ignored" or candidates is None:
        return np.ones(rows, bool)
    candidates = np.asarray(candidates)
    named = candidates[np.arange(rows), np.asarray(probabilities).argmax(axis=1)] > 0
    if rules == "agree_only":
        return named
    if rules == "agree":
        return named | (candidates.sum(axis=1) == 0)
    raise ValueError(f"self_training_rules {rules!r}: choose one of {SELF_TRAINING_RULES}")


def pick_per_class(probabilities: np.ndarray, labelled: np.ndarray, per_class: int,
                   eligible: np.ndarray | None = None) -> np.ndarray:
    """A boolean mask of the rows to pseudo-label: of the unlabelled (and ``eligible``) rows
    predicted as each class, the ``per_class`` most confident (ties: the earlier row)."""
    labeller = PseudoLabeller(per_class)
    labeller.add_probabilities(np.arange(len(probabilities)), probabilities, labelled, eligible)
    picked = np.zeros(len(probabilities), bool)
    picked[list(labeller.labels())] = True
    return picked


class PseudoLabeller:
    """Feed it batches of (ids, logits, labelled mask); ``labels()`` then holds, per class,
    the ``per_class`` unlabelled products predicted as that class most confidently:
    ``{id: class index}``. Memory: ``per_class`` entries a class, whatever the catalogue."""

    def __init__(self, per_class: int):
        if per_class < 1:
            raise ValueError("per_class must be >= 1")
        self.per_class = per_class
        self._heaps: dict[int, list] = {}
        self.seen = 0  # unlabelled products so far; ties go to the one seen first

    def add(self, ids, logits, labelled) -> None:
        self.add_probabilities(ids, softmax(logits), labelled)

    def add_probabilities(self, ids, probabilities, labelled, eligible=None) -> None:
        """``eligible``: which rows may be picked (``agrees_with_rules``; default every one);
        an ineligible unlabelled row still counts in ``seen``."""
        predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
        unlabelled = ~np.asarray(labelled, bool)
        order = self.seen + np.cumsum(unlabelled)  # each unlabelled row's place in the stream
        self.seen += int(unlabelled.sum())
        pickable = unlabelled if eligible is None else unlabelled & np.asarray(eligible, bool)
        for label in np.unique(predicted[pickable]):
            rows = np.flatnonzero(pickable & (predicted == label))
            heap = self._heaps.setdefault(int(label), [])
            # the batch's most confident first: once one cannot enter the heap, none after can
            for row in rows[np.argsort(-confidence[rows], kind="stable")]:
                entry = (float(confidence[row]), -int(order[row]), ids[row])
                if len(heap) < self.per_class:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    heapq.heapreplace(heap, entry)
                else:
                    break

    def labels(self) -> dict:
        return {product: label for label, heap in self._heaps.items()
                for _, _, product in heap}


def label_catalogue(model, files: list[str], vocabs, per_class: int, total: int | None = None,
                    batch_size: int = 512, rules: str = "ignored",
                    rule_class_map=None) -> tuple[dict, int]:
    """Run the trained ``model`` over the training products of ``files`` (TFRecords);
    ``({id: class index} of the pseudo-labelled products, products without a label seen)``.
    ``rules`` (``agrees_with_rules``) with ``rule_class_map`` (``RuleClassMap``): which
    products the rules let be pseudo-labelled."""
    import tensorflow as tf

    from shared_config.cli import Progress
    from trainer import data

    spec = vocabs.tft_output.transformed_feature_spec()

    use_rules = rules != "ignored" and rule_class_map is not None
    width = len(vocabs.labels("rule_based")) if use_rules else 0

    def parse(serialized):
        batch = tf.io.parse_example(serialized, spec)
        rule_labels = tf.sparse.to_dense(data.multi_hot_sparse(
            batch["rule_based_labels"], width)) if use_rules else tf.zeros([0])
        return (data.to_model_inputs(batch, vocabs), batch["id"],
                tf.reshape(batch["exclusive_label"], [-1]) >= 0, rule_labels)

    @tf.function(reduce_retracing=True)
    def exclusive_logits(inputs):  # one traced graph a batch: 4x the pace of an eager call
        return model(inputs, training=False)["exclusive"]

    labeller = PseudoLabeller(per_class)
    progress = Progress("self-training: label", total, "products")
    done = 0
    for inputs, ids, labelled, rule_labels in tf.data.TFRecordDataset(files).batch(
            batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE):
        probabilities = softmax(exclusive_logits(inputs))
        candidates = np.asarray(rule_class_map.candidates(rule_labels)) if use_rules else None
        eligible = agrees_with_rules(probabilities, candidates, rules)
        labeller.add_probabilities([i.decode("utf-8") for i in ids.numpy()], probabilities,
                                   labelled.numpy(), eligible)
        done += len(probabilities)
        progress.update(done)
    return labeller.labels(), labeller.seen


def examples_of(files: list[str], vocabs, ids, batch_size: int = 4096) -> list[bytes]:
    """The serialized examples of the products ``ids`` in ``files``, each once."""
    import tensorflow as tf

    wanted, found = set(ids), {}
    spec = {"id": vocabs.tft_output.transformed_feature_spec()["id"]}
    for serialized in tf.data.TFRecordDataset(files).batch(batch_size):
        products = tf.io.parse_example(serialized, spec)["id"].numpy()
        for example, product in zip(serialized.numpy(), products):
            product = product.decode("utf-8")
            if product in wanted and product not in found:
                found[product] = example
    return list(found.values())
