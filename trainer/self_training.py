"""One round of class-balanced self-training: the trained network labels the unlabelled
products it is surest of, so many per class, and a fresh network learns from those
pseudo-labels beside the human ones.

Per class, not over a threshold: a threshold hands most pseudo-labels to the classes the
network already predicts well and few to the small ones, which macro-F1 counts as much
(on the reviews' validation split, thresholds of 0.7 and 0.9 lost 1-2 points where 50 a
class gained about 3; README, "Label efficiency"). Human labels always win: a labelled
product is never pseudo-labelled.

``PseudoLabeller`` applies the rule batch by batch to a catalogue of any size (a bounded
heap per class); ``pick_per_class`` is the same rule on an array, as a mask.
"""
from __future__ import annotations

import heapq

import numpy as np
from scipy import special


def softmax(logits) -> np.ndarray:
    """Each row's class probabilities from its logits."""
    return special.softmax(np.asarray(logits, dtype="float64"), axis=1)


def pick_per_class(probabilities: np.ndarray, labelled: np.ndarray, per_class: int) -> np.ndarray:
    """A boolean mask of the rows to pseudo-label: of the unlabelled rows predicted as each
    class, the ``per_class`` most confident (ties: the earlier row)."""
    labeller = PseudoLabeller(per_class)
    labeller.add_probabilities(np.arange(len(probabilities)), probabilities, labelled)
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

    def add_probabilities(self, ids, probabilities, labelled) -> None:
        predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
        unlabelled = ~np.asarray(labelled, bool)
        order = self.seen + np.cumsum(unlabelled)  # each unlabelled row's place in the stream
        self.seen += int(unlabelled.sum())
        for label in np.unique(predicted[unlabelled]):
            rows = np.flatnonzero(unlabelled & (predicted == label))
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
                    batch_size: int = 512) -> tuple[dict, int]:
    """Run the trained ``model`` over the training products of ``files`` (TFRecords);
    ``({id: class index} of the pseudo-labelled products, products without a label seen)``."""
    import tensorflow as tf

    from shared_config.cli import Progress
    from trainer import data

    spec = vocabs.tft_output.transformed_feature_spec()

    def parse(serialized):
        batch = tf.io.parse_example(serialized, spec)
        return (data.to_model_inputs(batch, vocabs), batch["id"],
                tf.reshape(batch["exclusive_label"], [-1]) >= 0)

    labeller = PseudoLabeller(per_class)
    progress = Progress("self-training: label", total, "products")
    done = 0
    for inputs, ids, labelled in tf.data.TFRecordDataset(files).batch(batch_size).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE):
        logits = np.asarray(model(inputs, training=False)["exclusive"])
        labeller.add([i.decode("utf-8") for i in ids.numpy()], logits, labelled.numpy())
        done += len(logits)
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
