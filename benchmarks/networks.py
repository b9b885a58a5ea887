"""prodcat's networks in the label-efficiency benchmark, built by the trainer's own code.

- ``dnn``: the supervised baseline on the labelled rows;
- ``ssl_gan``: the SSL-GAN on human labels and the unlabelled rows;
- ``ssl_gan_rules``: the SSL-GAN with the rule-based objective (prodcat's default
  model: both objectives, every option at its default);
- ``net_supervised`` / ``net_rules``: the same two with the real/fake term off
  (``real_fake_weight=0``), the GAN-less twins that show what the GAN adds;
- ``ssl_gan_rules_x3``: an ensemble of three ``ssl_gan_rules`` networks (the same
  labelled rows, seeds ``3 * seed`` to ``3 * seed + 2``), their class probabilities
  averaged: what averaging away one network's seed is worth (not a default: it
  costs three times the training).

Every network stops early on validation macro-F1 (the best epoch's weights are
kept), as the trainer does with ``--early-stopping-patience``, and the SSL-GAN's
self-train as the trainer does (``self_training_per_class``); the benchmark-only option
``self_training_teacher`` has the weak-supervision peer pick the pseudo-labels instead, or
the network and the peer together (co-training, a variant tried on validation), and
``early_stopping_on`` has the epoch chosen by the validation log-likelihood of the true
classes in place of macro-F1 (also tried).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

from benchmarks.label_data import DataSet
from trainer.hparams import HParams
from trainer.model import ModelInput, build_model
from trainer.rule_classes import RuleClassMap
from trainer.self_training import agrees_with_rules, pick_per_class, softmax
from trainer.ssl_gan import build_ssl_gan
from trainer.training import BestOnValidation

BATCH = 128
MAX_EPOCHS = 10
PATIENCE = 3
NETWORKS = ("dnn", "ssl_gan", "ssl_gan_rules", "net_supervised", "net_rules",
            "ssl_gan_rules_x3")
ENSEMBLE = "_x3"  # a method of three networks
MEMBERS = 3
BENCHMARK_SHAPE = {"hidden_units": (256,), "dropout": 0.3, "batch_size": BATCH}
# a benchmark-only option (not the trainer's): who picks self-training's pseudo-labels, the
# first network ("network", as the trainer), the weak-supervision peer ("peer") or both,
# their class probabilities averaged ("network_and_peer")
TEACHER = "self_training_teacher"
TEACHERS = ("network", "peer", "network_and_peer")
# a benchmark-only option: what early stopping reads on validation, macro-F1 (as the
# trainer) or the mean log-likelihood of the true classes (smoother over a few products)
STOPPING = "early_stopping_on"
STOPPINGS = ("macro_f1", "log_likelihood")
# a benchmark-only option: the network's wide (linear) path starts as the tuned
# weak-supervision peer (its coefficients and intercepts), so that the network learns what
# the peer misses; "frozen" keeps the peer as it is, "trainable" lets training move it
WIDE_PEER = "wide_from_peer"
WIDE_PEERS = ("off", "frozen", "trainable")
ABSENT_CLASS_LOGIT = -10.0  # a class the peer's training rows lacked: the peer never names it


def dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _rows(x, y, labelled, rules):
    rule_targets = rules if rules is not None else np.zeros((len(y), 1), "float32")
    targets = {"exclusive": y, "rule_based": rule_targets}
    weights = {"exclusive": labelled.astype("float32"),
               "rule_based": (rule_targets.sum(axis=1) > 0).astype("float32")}
    if rules is None:
        targets, weights = {"exclusive": y}, {"exclusive": weights["exclusive"]}
    return tf.data.Dataset.from_tensor_slices(({"x": x}, targets, weights))


def hparams_for(method: str, seed: int, options: dict) -> HParams:
    """The hyperparameters of a network method: the defaults, the benchmark's shape,
    then ``options`` (a variant under trial)."""
    if method == "dnn":
        return HParams(model_type="dnn", objectives=("exclusive",), seed=seed,
                       **BENCHMARK_SHAPE)
    use_rules = method in ("ssl_gan_rules", "net_rules")
    extra = {**options, **({"real_fake_weight": 0.0} if method.startswith("net_") else {})}
    # a variant may change the benchmark's shape too (its hidden layers, dropout)
    return HParams(model_type="ssl_gan", seed=seed, **{**BENCHMARK_SHAPE, **extra},
                   objectives=("exclusive", "rule_based") if use_rules else ("exclusive",))


def run_network(method: str, data: DataSet, labelled: np.ndarray, seed: int,
                options: dict | None = None, max_epochs: int = MAX_EPOCHS) -> dict:
    """Train one network; ``{"valid": predicted, "test": predicted, "epochs": n, ...}``.

    With self-training (the SSL-GAN's ``self_training_per_class``, as the trainer does it):
    the first network's surest predictions on the unlabelled training rows, so many per
    class, become labels of a second, fresh network, whose predictions are the answer."""
    if method.endswith(ENSEMBLE):
        members = [run_probabilities(method.removesuffix(ENSEMBLE), data, labelled,
                                     MEMBERS * seed + k, options, max_epochs)
                   for k in range(MEMBERS)]
        return {"valid": sum(m["valid"] for m in members).argmax(axis=1),
                "test": sum(m["test"] for m in members).argmax(axis=1),
                "epochs": [m["epochs"] for m in members]}
    out = run_probabilities(method, data, labelled, seed, options, max_epochs)
    return {**out, "valid": out["valid"].argmax(axis=1), "test": out["test"].argmax(axis=1)}


def run_probabilities(method: str, data: DataSet, labelled: np.ndarray, seed: int,
                      options: dict | None = None, max_epochs: int = MAX_EPOCHS) -> dict:
    """``run_network``'s answer with class probabilities in place of the predicted classes."""
    options = dict(options or {})
    teacher = options.pop(TEACHER, "network")
    if teacher not in TEACHERS:
        raise ValueError(f"{TEACHER} {teacher!r}: choose one of {TEACHERS}")
    stopping = options.pop(STOPPING, "macro_f1")
    if stopping not in STOPPINGS:
        raise ValueError(f"{STOPPING} {stopping!r}: choose one of {STOPPINGS}")
    wide_peer = options.pop(WIDE_PEER, "off")
    if wide_peer not in WIDE_PEERS:
        raise ValueError(f"{WIDE_PEER} {wide_peer!r}: choose one of {WIDE_PEERS}")
    peer_path = None
    if wide_peer != "off":
        options["wide"] = True
        peer_path = (peer_linear_path(data, labelled, seed), wide_peer == "trainable")
    hparams = hparams_for(method, seed, options)
    y = data.train.y
    pretrained = {}  # the first network's pretrained encoder, for self-training's second
    model, best = _fit(method, data, y, labelled, seed, hparams, max_epochs, stopping=stopping,
                       pretrained=pretrained, peer_path=peer_path)
    extra = {}
    if method != "dnn" and hparams.self_training_per_class and not labelled.all():
        parts = np.array_split(dense(data.train.x), max(1, len(y) // 4096))
        probabilities = softmax(np.concatenate([_logits(model, part) for part in parts]))
        if teacher != "network":  # the weak-supervision peer's probabilities (co-training)
            from benchmarks.peers import run_peer
            from trainer.peer import class_probabilities

            peer = class_probabilities(run_peer("weak_supervision", data, labelled, seed)["model"],
                                       data.train.x, len(data.classes))
            probabilities = peer if teacher == "peer" else (probabilities + peer) / 2
        use_rules = "rule_based" in hparams.objectives and data.has_rules
        eligible = agrees_with_rules(probabilities, data.train.candidates if use_rules else None,
                                     hparams.self_training_rules)
        picked = pick_per_class(probabilities, labelled, hparams.self_training_per_class,
                                eligible)
        y = np.where(picked, probabilities.argmax(axis=1), y)
        extra = {"pseudo_labels": int(picked.sum()),
                 "pseudo_right": float(np.mean(y[picked] == data.train.y[picked]))
                 if picked.any() else None, "first_epochs": len(best.scores)}
        # "first_network": the first's best epochs, no choice of its own
        as_first = hparams.self_training_epochs == "first_network"
        model, best = _fit(method, data, y, labelled | picked, seed, hparams,
                           best.best_epoch + 1 if as_first else max_epochs,
                           early_stopping=not as_first, stopping=stopping,
                           pretrained=pretrained, peer_path=peer_path)
    x_valid, x_test = dense(data.valid.x), dense(data.test.x)
    return {"valid": _probabilities(model, x_valid), "test": _probabilities(model, x_test),
            "epochs": len(best.scores), "best_epoch": best.best_epoch + 1, **extra}


def peer_linear_path(data: DataSet, labelled: np.ndarray, seed: int) -> tuple:
    """The tuned weak-supervision peer as a linear layer over the same inputs:
    ``(kernel [inputs, classes], bias [classes])``, its logits the peer's (a class its
    training rows lacked gets no weight and ``ABSENT_CLASS_LOGIT``)."""
    from benchmarks.peers import run_peer

    peer = run_peer("weak_supervision", data, labelled, seed)["model"]
    kernel = np.zeros((data.train.x.shape[1], len(data.classes)), "float32")
    bias = np.full(len(data.classes), ABSENT_CLASS_LOGIT, "float32")
    coef, intercept = peer.coef_, peer.intercept_
    if len(peer.classes_) == 2:  # one column for two classes: the first's logit is 0
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    kernel[:, peer.classes_] = coef.T
    bias[peer.classes_] = intercept
    return kernel, bias


def _logits(model, x) -> np.ndarray:
    return np.asarray(model({"x": x}, training=False)["exclusive"])


def _probabilities(model, x) -> np.ndarray:
    return softmax(_logits(model, x))


def _predicted(model, x) -> np.ndarray:
    return _logits(model, x).argmax(axis=1)  # the softmax keeps the order


def _log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The mean log-probability of the true classes (higher better)."""
    return float(np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))


def _fit(method: str, data: DataSet, y: np.ndarray, labelled: np.ndarray, seed: int,
         hparams: HParams, max_epochs: int, early_stopping: bool = True,
         stopping: str = "macro_f1", pretrained: dict | None = None,
         peer_path: tuple | None = None):
    """A fresh network fitted on the training rows (``y`` the labels of the ``labelled``
    ones), stopped early on validation (``stopping``: by its macro-F1 or its
    log-likelihood); ``(model with its best epoch's weights, stopper)``. ``pretrained``
    shares the pretrained encoder between the networks of one method, as the trainer does:
    the first fills in its weights, those after it start from them. ``peer_path``:
    ``((kernel, bias), trainable)``, the wide path's exclusive weights to start from.
    Without ``early_stopping``: ``max_epochs`` epochs, the last one's weights kept (the
    stopper only records the validation scores)."""
    keras.utils.set_random_seed(seed)
    x_train, x_valid = dense(data.train.x), dense(data.valid.x)
    specs = [ModelInput("x", "vector", x_train.shape[1])]
    use_rules = "rule_based" in hparams.objectives and data.has_rules
    n_rules = len(data.rule_categories) if data.has_rules else 1
    classes = {"exclusive": len(data.classes), "rule_based": n_rules}
    rules = data.train.rules if use_rules else None
    patience = PATIENCE if early_stopping else 0
    if stopping == "log_likelihood":
        best = BestOnValidation(lambda model: _probabilities(model, x_valid), data.valid.y,
                                patience, score=_log_likelihood)
    else:
        best = BestOnValidation(lambda model: _predicted(model, x_valid), data.valid.y,
                                patience)
    steps = len(y) // BATCH
    if method == "dnn":
        model = build_model(hparams, specs, classes)
        rows = _rows(x_train[labelled], y[labelled], np.ones(labelled.sum(), bool), None)
        batches = rows.shuffle(10_000, seed=seed).repeat().batch(BATCH).map(
            lambda x, t, w: (x, t))
        model.fit(batches, steps_per_epoch=max(steps // 2, 50), epochs=max_epochs * 2,
                  callbacks=[best], verbose=0)
    else:
        model = build_ssl_gan(hparams, specs, classes,
                              rule_class_map=RuleClassMap.build(data.rule_categories, data.classes)
                              if use_rules else None)
        everything = _rows(x_train, y, labelled, rules)
        only_labelled = _rows(x_train[labelled], y[labelled], labelled[labelled],
                              None if rules is None else rules[labelled])
        if peer_path is not None:
            (kernel, bias), trainable = peer_path
            layer = model.wide.get_layer("exclusive_wide")
            layer.set_weights([kernel, bias])
            layer.trainable = trainable
        if hparams.encoder_pretrain_epochs and pretrained and "encoder" in pretrained:
            model.encoder.set_weights(pretrained["encoder"])
        elif hparams.encoder_pretrain_epochs:
            model.pretrain_encoder(everything.shuffle(30_000, seed=seed).repeat().batch(BATCH),
                                   steps, hparams.encoder_pretrain_epochs)
            if pretrained is not None:
                pretrained["encoder"] = model.encoder.get_weights()
        batches = tf.data.Dataset.sample_from_datasets(
            [only_labelled.shuffle(10_000, seed=seed).repeat(),
             everything.shuffle(30_000, seed=seed).repeat()],
            [hparams.labelled_share, 1 - hparams.labelled_share], seed=seed).batch(BATCH)
        model.fit(batches, steps_per_epoch=steps, epochs=max_epochs, callbacks=[best], verbose=0)
    if early_stopping:
        best.restore_best()
    return model, best
