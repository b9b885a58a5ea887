"""The scikit-learn peers of the label-efficiency benchmark, each tuned on validation.

Every peer gets what prodcat's model gets: the labelled training rows, the
unlabelled ones, and (on the reviews) the legacy rules' labels; each picks its
hyperparameters by macro-F1 on the validation split, as a practitioner would.

- ``logreg``: ``LogisticRegression(class_weight="balanced")``, ``C`` searched;
- ``self_training``: ``SelfTrainingClassifier`` around that model (its ``C``),
  the confidence threshold searched;
- ``label_spreading``: ``LabelSpreading`` (knn kernel) on a 100-dimension SVD of the
  inputs, neighbours and clamping searched;
- ``weak_supervision``: the rules as labels: a product whose rule categories name
  exactly one exclusive class (through the category tree) gets it as a
  pseudo-label, human labels win where both exist; the balanced logistic
  regression on both, ``C`` and the pseudo-labels' weight searched;
- ``weak_self_training``: that model, then one round of the class-balanced
  self-training prodcat's network gets (``trainer/self_training.py``): its surest
  predictions on the unlabelled training rows, so many per class, join the labels
  (weight 1, in place of their rules' pseudo-label), the number per class (none
  among the choices) and ``C`` searched.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse

from benchmarks.label_data import DataSet
from trainer.metrics import macro_f1
from trainer.peer import balanced_logreg, tune
from trainer.self_training import pick_per_class

PEERS = ("logreg", "self_training", "label_spreading", "weak_supervision", "weak_self_training")
PER_CLASS = (25, 50, 100)  # weak_self_training's pseudo-labels per class
PSEUDO_WEIGHTS = (0.1, 0.3, 1.0)
THRESHOLDS = (0.2, 0.35, 0.5, 0.7)  # 20 classes: a confident prediction is often under 0.5
SPREADING = ((7, 0.2), (7, 0.8), (20, 0.2), (20, 0.8))


def _best(candidates, data: DataSet):
    """Fit each ``(params, make_and_fit)``; the one best on validation, with its choice."""
    best = None
    for params, make in candidates:
        model = make()
        valid = model.predict(_x(data.valid, model))
        score = macro_f1(data.valid.y, valid)
        if best is None or score > best[0]:
            best = (score, params, model, valid)
    _, params, model, valid = best
    return {"valid": valid, "test": model.predict(_x(data.test, model)), "choice": params,
            "model": model}


def _x(split, model):
    return model.project(split.x) if hasattr(model, "project") else split.x


def run_peer(method: str, data: DataSet, labelled: np.ndarray, seed: int) -> dict:
    train = data.train
    x_lab, y_lab = train.x[labelled], train.y[labelled]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "logreg":
            return _best([({"C": c}, lambda c=c: balanced_logreg(c, seed).fit(x_lab, y_lab))
                          for c in _grid(labelled)], data)
        if method in ("weak_supervision", "weak_self_training"):
            pseudo = (~labelled) & (train.pseudo >= 0)

            def fit(c, w, picked=None, y_picked=None):
                rules = pseudo if picked is None else pseudo & ~picked
                parts = [labelled, rules] + ([] if picked is None else [picked])
                x = sparse.vstack([train.x[p] for p in parts])
                y = np.concatenate([y_lab, train.pseudo[rules]] +
                                   ([] if picked is None else [y_picked[picked]]))
                weights = np.concatenate([np.ones(len(y_lab)), np.full(rules.sum(), w)] + (
                    [] if picked is None else [np.ones(picked.sum())]))
                return balanced_logreg(c, seed).fit(x, y, sample_weight=weights)
            weak = _best([({"C": c, "pseudo_weight": w}, lambda c=c, w=w: fit(c, w))
                          for c in _grid(labelled) for w in PSEUDO_WEIGHTS], data)
            if method == "weak_supervision":
                return weak
            model, w = weak["model"], weak["choice"]["pseudo_weight"]
            probabilities = model.predict_proba(train.x)
            predicted = model.classes_[probabilities.argmax(axis=1)]
            candidates = []
            for k in PER_CLASS:
                picked = pick_per_class(probabilities, labelled, k)
                candidates += [({"C": c2, "pseudo_weight": w, "per_class": k},
                                lambda c2=c2, picked=picked: fit(c2, w, picked, predicted))
                               for c2 in _grid(labelled)]
            # no self-training stays a candidate: the search may find it does not pay
            return _best([(weak["choice"], lambda: model), *candidates], data)
        if method == "self_training":
            from sklearn.semi_supervised import SelfTrainingClassifier

            c = tune(lambda c: macro_f1(data.valid.y, balanced_logreg(c, seed).fit(
                x_lab, y_lab).predict(data.valid.x)), _grid(labelled))[1]
            partial = np.where(labelled, train.y, -1)
            return _best([({"C": c, "threshold": t}, lambda t=t: SelfTrainingClassifier(
                balanced_logreg(c, seed), threshold=t, max_iter=5).fit(train.x, partial))
                for t in THRESHOLDS], data)
        if method == "label_spreading":
            from sklearn.decomposition import TruncatedSVD
            from sklearn.semi_supervised import LabelSpreading

            svd = TruncatedSVD(100, random_state=seed).fit(train.x)
            reduced = svd.transform(train.x)
            partial = np.where(labelled, train.y, -1)

            def make(k, alpha):
                model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=alpha, max_iter=50)
                model.fit(reduced, partial)
                model.project = svd.transform
                return model
            return _best([({"n_neighbors": k, "alpha": a}, lambda k=k, a=a: make(k, a))
                          for k, a in SPREADING], data)
    raise ValueError(f"unknown peer {method!r}")


def _grid(labelled: np.ndarray):
    """C values: the full grid on a few labels; large C is slow and never best on many."""
    return (0.1, 0.3, 1.0, 3.0, 10.0, 30.0) if labelled.sum() < 5000 else (1.0, 3.0, 10.0)
