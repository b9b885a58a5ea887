"""A run's training batches as plain arrays, to time the default model's train step where the
input pipeline cannot run (a GPU machine with JAX and no TensorFlow).

``save`` (TensorFlow, TF Transform) makes the batches as the trainer does — the SSL-GAN's
mixed batches of a run's TFRecords, parsed — and writes them to one ``.npz``: each sparse
input (TF-IDF) as per-row term ids and weights padded to the batch's widest row, the rule
labels as per-row category ids padded the same way, each padded array with its rows'
lengths; the other inputs and targets as they are; and what the model is built from (its
inputs, classes, both objectives' label names) as JSON. ``load`` needs numpy only;
``jax_batch`` and ``tensorflow_batch`` turn a loaded batch into what each backend's train
step reads (``BCOO`` text and dense rule targets for JAX, ``SparseTensor``s for TensorFlow);
``build`` builds the default SSL-GAN for those shapes.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

META = "meta_json"


def _padded(sparse, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A [rows, width] ``SparseTensor`` -> ``(columns, values, lengths)``, each row's entries
    first, in order, then zeros to the widest row."""
    indices = sparse.indices.numpy()
    values = sparse.values.numpy()
    lengths = np.bincount(indices[:, 0], minlength=rows)
    width = max(int(lengths.max(initial=0)), 1)
    columns = np.zeros((rows, width), np.int32)
    padded = np.zeros((rows, width), values.dtype)
    # each entry's place in its row: indices are row-major
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    place = np.arange(len(indices)) - starts[indices[:, 0]]
    columns[indices[:, 0], place] = indices[:, 1]
    padded[indices[:, 0], place] = values
    return columns, padded, lengths.astype(np.int32)


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-batch [rows, width_i] arrays -> one [batches, rows, max width], zero-padded."""
    width = max(a.shape[1] for a in arrays)
    return np.stack([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays])


def save(paths, hparams, count: int, target: str) -> dict:
    """Write ``count`` training batches of the run at ``paths`` to ``target`` (``.npz``);
    returns the metadata written with them."""
    from shared_config.paths import OBJECTIVES
    from trainer import data, task, training
    from trainer.model import model_inputs

    vocabs = task.vocabularies(paths)
    rows, _ = training.training_rows(paths, hparams, task.example_counts(paths))
    batches = list(data.parsed(rows, vocabs, hparams.objectives, sparse_rules=True).take(count))
    specs = model_inputs(vocabs)
    meta = {"specs": [asdict(spec) for spec in specs],
            "classes": {o: len(vocabs.labels(o)) for o in OBJECTIVES},
            "labels": {o: list(vocabs.labels(o)) for o in OBJECTIVES},
            "batch_size": hparams.batch_size, "batches": len(batches)}
    arrays: dict[str, list] = {}
    for inputs, targets, weights in batches:
        size = int(targets["exclusive"].shape[0])
        for spec in specs:
            value = inputs[spec.name]
            if spec.sparse:
                for part, array in zip(("ids", "values", "lengths"), _padded(value, size)):
                    arrays.setdefault(f"input/{spec.name}/{part}", []).append(array)
            else:
                arrays.setdefault(f"input/{spec.name}", []).append(value.numpy())
        ids, _, lengths = _padded(targets["rule_based"], size)
        arrays.setdefault("target/rule_based/ids", []).append(ids)
        arrays.setdefault("target/rule_based/lengths", []).append(lengths)
        arrays.setdefault("target/exclusive", []).append(targets["exclusive"].numpy())
        for objective in OBJECTIVES:
            arrays.setdefault(f"weight/{objective}", []).append(weights[objective].numpy())
    stacked = {name: _stacked(parts) if name.endswith(("/ids", "/values"))
               else np.stack(parts) for name, parts in arrays.items()}
    with open(target, "wb") as out:
        np.savez_compressed(out, **stacked, **{META: np.array(json.dumps(meta))})
    return meta


def load(source: str) -> tuple[dict, list[dict]]:
    """``(metadata, batches)``, each batch {array name: its numpy array}."""
    with np.load(source) as saved:
        meta = json.loads(str(saved[META]))
        names = [name for name in saved.files if name != META]
        arrays = {name: saved[name] for name in names}
    return meta, [{name: array[i] for name, array in arrays.items()}
                  for i in range(meta["batches"])]


def _entries(batch: dict, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """``(row of each entry, its position in the row)``: the padded array's real entries."""
    lengths = batch[f"{prefix}/lengths"]
    width = batch[f"{prefix}/ids"].shape[1]
    real = np.arange(width)[None, :] < lengths[:, None]
    return np.nonzero(real)


def jax_batch(batch: dict, meta: dict):
    """``(inputs, targets, weights)`` for ``SSLGAN.jax_train_step``: text as ``BCOO`` with
    every padded entry kept at weight 0 (a fixed number of entries a batch, so that the
    jitted step is traced once per padded width), rule targets dense 0/1."""
    import jax.numpy as jnp
    from jax.experimental import sparse

    inputs = {}
    for spec in meta["specs"]:
        if not spec["sparse"]:
            inputs[spec["name"]] = jnp.asarray(batch[f"input/{spec['name']}"])
            continue
        ids = batch[f"input/{spec['name']}/ids"]
        rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
        indices = np.stack([rows, ids.reshape(-1)], axis=1).astype(np.int32)
        inputs[spec["name"]] = sparse.BCOO(
            (jnp.asarray(batch[f"input/{spec['name']}/values"].reshape(-1)),
             jnp.asarray(indices)), shape=(ids.shape[0], spec["size"]))
    rules = np.zeros((len(batch["target/exclusive"]), meta["classes"]["rule_based"]), np.float32)
    rows, places = _entries(batch, "target/rule_based")
    rules[rows, batch["target/rule_based/ids"][rows, places]] = 1.0
    return (inputs, {"exclusive": jnp.asarray(batch["target/exclusive"]),
                     "rule_based": jnp.asarray(rules)},
            {name: jnp.asarray(batch[f"weight/{name}"]) for name in ("exclusive", "rule_based")})


def _sparse_tensor(batch: dict, prefix: str, width: int, values=None):
    import tensorflow as tf

    rows, places = _entries(batch, prefix)
    columns = batch[f"{prefix}/ids"][rows, places]
    stored = np.ones(len(rows), np.float32) if values is None else values[rows, places]
    return tf.SparseTensor(np.stack([rows, columns], axis=1).astype(np.int64), stored,
                           [len(batch[f"{prefix}/lengths"]), width])


def tensorflow_batch(batch: dict, meta: dict):
    """``(inputs, targets, weights)`` as the trainer's input pipeline gives them to
    ``SSLGAN.train_step``: ``SparseTensor`` text inputs and rule targets."""
    import tensorflow as tf

    inputs = {}
    for spec in meta["specs"]:
        name = spec["name"]
        inputs[name] = _sparse_tensor(batch, f"input/{name}", spec["size"],
                                      batch[f"input/{name}/values"]) if spec["sparse"] \
            else tf.constant(batch[f"input/{name}"])
    targets = {"exclusive": tf.constant(batch["target/exclusive"]),
               "rule_based": _sparse_tensor(batch, "target/rule_based",
                                            meta["classes"]["rule_based"])}
    return inputs, targets, {name: tf.constant(batch[f"weight/{name}"])
                             for name in ("exclusive", "rule_based")}


def build(meta: dict, hparams=None):
    """The default SSL-GAN (or ``hparams``') for the saved batches' inputs and classes."""
    from trainer.hparams import HParams
    from trainer.model import ModelInput
    from trainer.rule_classes import RuleClassMap
    from trainer.ssl_gan import build_ssl_gan

    return build_ssl_gan(hparams or HParams(), [ModelInput(**spec) for spec in meta["specs"]],
                         meta["classes"], rule_class_map=RuleClassMap.build(
                             meta["labels"]["rule_based"], meta["labels"]["exclusive"]))
