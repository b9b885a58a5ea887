"""Validation metrics per objective, computed from predictions with NumPy."""
from __future__ import annotations

import numpy as np


def _prf(tp, fp, fn):
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / np.maximum(tp + fn, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return precision, recall, f1


def exclusive_metrics(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    """Accuracy and macro-F1 over the classes present in ``labels``."""
    predicted = probabilities.argmax(axis=1)
    classes = np.arange(len(names))
    tp = np.array([np.sum((predicted == c) & (labels == c)) for c in classes])
    fp = np.array([np.sum((predicted == c) & (labels != c)) for c in classes])
    fn = np.array([np.sum((predicted != c) & (labels == c)) for c in classes])
    precision, recall, f1 = _prf(tp, fp, fn)
    support = tp + fn
    present = support > 0
    return {
        "examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": int(support[c])} for c in classes},
    }


def rule_based_metrics(labels: np.ndarray, probabilities: np.ndarray, names: list[str],
                       threshold: float) -> dict:
    """Micro and macro precision/recall/F1 of the multi-label head at ``threshold``."""
    predicted = probabilities >= threshold
    truth = labels > 0.5
    tp = np.sum(predicted & truth, axis=0)
    fp = np.sum(predicted & ~truth, axis=0)
    fn = np.sum(~predicted & truth, axis=0)
    precision, recall, f1 = _prf(tp, fp, fn)
    micro_p, micro_r, micro_f1 = _prf(tp.sum(), fp.sum(), fn.sum())
    present = (tp + fn) > 0
    return {
        "examples": int(len(labels)),
        "micro_precision": float(micro_p), "micro_recall": float(micro_r),
        "micro_f1": float(micro_f1),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {names[c]: {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": int(tp[c] + fn[c])}
                      for c in range(len(names))},
    }
