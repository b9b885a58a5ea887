"""Validation metrics per objective, computed from predictions with NumPy.

Macro-F1 has one definition in prodcat, scikit-learn's (``f1_score(average="macro")``):
the mean F1 over the classes that occur in the evaluated split's labels or
predictions; a class predicted but absent counts with F1 0. The trainer's
metrics, the run statistics, the demo and the benchmarks all use ``macro_f1``.
"""
from __future__ import annotations

import numpy as np


def macro_f1(labels, predicted) -> float:
    """scikit-learn's macro-F1 (classes present in ``labels`` or ``predicted``)."""
    from sklearn.metrics import f1_score

    if len(labels) == 0:
        return 0.0
    return float(f1_score(labels, predicted, average="macro", zero_division=0))


def _prf(tp, fp, fn):
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / np.maximum(tp + fn, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return precision, recall, f1


def exclusive_metrics(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    """Accuracy, macro-F1 (``macro_f1``) and per-class figures."""
    predicted = probabilities.argmax(axis=1)
    classes = np.arange(len(names))
    tp = np.array([np.sum((predicted == c) & (labels == c)) for c in classes])
    fp = np.array([np.sum((predicted == c) & (labels != c)) for c in classes])
    fn = np.array([np.sum((predicted != c) & (labels == c)) for c in classes])
    precision, recall, f1 = _prf(tp, fp, fn)
    support = tp + fn
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (labels.astype(np.int64), predicted), 1)
    return {
        "examples": len(labels),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
        "macro_f1": macro_f1(labels, predicted),
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": int(support[c])} for c in classes},
        # rows: the true class, columns: the predicted class, in ``names`` order
        "confusion": {"classes": list(names), "matrix": confusion.tolist()},
    }


def _rule_based_counts(labels: np.ndarray, probabilities: np.ndarray, threshold: float):
    predicted = probabilities >= threshold
    truth = labels > 0.5
    return (np.sum(predicted & truth, axis=0), np.sum(predicted & ~truth, axis=0),
            np.sum(~predicted & truth, axis=0))


def _macro_over_present(f1, tp, fn) -> float:
    present = (tp + fn) > 0  # the categories some product of the split has
    return float(f1[present].mean()) if present.any() else 0.0


def rule_based_macro_f1(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> float:
    """The multi-label head's macro-F1 at ``threshold`` alone (what early stopping scores
    after every epoch; ``rule_based_metrics`` gives the same figure with the rest)."""
    tp, fp, fn = _rule_based_counts(labels, probabilities, threshold)
    return _macro_over_present(_prf(tp, fp, fn)[2], tp, fn)


def rule_based_metrics(labels: np.ndarray, probabilities: np.ndarray, names: list[str],
                       threshold: float) -> dict:
    """Micro and macro precision/recall/F1 of the multi-label head at ``threshold``, and
    each category's figures with its ROC-AUC."""
    tp, fp, fn = _rule_based_counts(labels, probabilities, threshold)
    precision, recall, f1 = _prf(tp, fp, fn)
    micro_p, micro_r, micro_f1 = _prf(tp.sum(), fp.sum(), fn.sum())
    auc = roc_auc_per_column(labels > 0.5, probabilities)
    return {
        "examples": len(labels),
        "micro_precision": float(micro_p), "micro_recall": float(micro_r),
        "micro_f1": float(micro_f1),
        "macro_f1": _macro_over_present(f1, tp, fn),
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": int(tp[c] + fn[c]),
                                 "roc_auc": auc[c]}
                      for c in range(len(names))},
    }


AUC_COLUMNS_AT_ONCE = 256  # ranks of 256 columns at a time: memory bounded by the split's rows


def roc_auc_per_column(truth: np.ndarray, scores: np.ndarray) -> list[float | None]:
    """Each column's ROC-AUC (scikit-learn's ``roc_auc_score``, ties counted half), None where
    the column has only one of the two outcomes. As the Mann-Whitney statistic over
    mid-ranks, a few hundred columns at once: one sort per column instead of a scikit-learn
    call per category (thousands of rule-based categories took minutes)."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, dtype=bool)
    positives = truth.sum(axis=0)
    negatives = len(truth) - positives
    both = np.flatnonzero((positives > 0) & (negatives > 0))
    result: list[float | None] = [None] * truth.shape[1]
    for start in range(0, len(both), AUC_COLUMNS_AT_ONCE):
        columns = both[start:start + AUC_COLUMNS_AT_ONCE]
        ranks = rankdata(scores[:, columns], axis=0)  # mid-ranks: ties share their mean rank
        n_pos, n_neg = positives[columns], negatives[columns]
        u = (ranks * truth[:, columns]).sum(axis=0) - n_pos * (n_pos + 1) / 2
        for column, value in zip(columns, u / (n_pos * n_neg)):
            result[column] = float(value)
    return result


PLOTTED_CLASSES = 40  # per objective: a taxonomy's thousands of categories make no readable chart


def plot_per_class_f1(result: dict, path: str) -> None:
    """A bar chart of each class's F1 per objective, for a person to look at: the
    ``PLOTTED_CLASSES`` classes with the most support (every class is in the JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = result["objectives"]
    shown = {objective: sorted((n for n, c in figures["per_class"].items() if c["support"] > 0),
                               key=lambda n: -figures["per_class"][n]["support"])[:PLOTTED_CLASSES]
             for objective, figures in objectives.items()}
    figure, axes = plt.subplots(len(objectives), 1, squeeze=False,
                                figsize=(10, 1 + 0.25 * sum(len(n) + 2 for n in shown.values())))
    for axis, (objective, figures) in zip(axes[:, 0], objectives.items()):
        names = shown[objective]
        axis.barh(names, [figures["per_class"][n]["f1"] for n in names])
        axis.set_xlim(0, 1)
        present = sum(c["support"] > 0 for c in figures["per_class"].values())
        largest = f", the {len(names)} largest of {present} classes" if len(names) < present else ""
        axis.set_title(f"{objective}: macro-F1 {figures['macro_f1']:.3f} "
                       f"({figures['examples']} examples, {result['split']}{largest})")
        axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
