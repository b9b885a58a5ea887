"""The baseline of the preprocessing benchmark: the same featurisation in one process.

``python -m benchmarks.sklearn_featurise DUMP_DIR OUT_DIR``
"""
from __future__ import annotations

import glob
import gzip
import json
import re
import sys

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import LabelEncoder, MultiLabelBinarizer

from beam_pipelines.raw_schema import normalise_text
from shared_config import features

_TAGS = re.compile(r"<[^>]{0,200}>|&#?[A-Za-z0-9]{1,10};")


def clean(text) -> str:
    return _TAGS.sub(" ", normalise_text(text if isinstance(text, str) else "")).lower()


def top_k_codes(values: list[str], k: int) -> np.ndarray:
    """Index in the top-k most frequent values, k for anything else (the OOV bucket)."""
    uniques, counts = np.unique(values, return_counts=True)
    top = uniques[np.argsort(-counts, kind="stable")[:k]]
    index = {v: i for i, v in enumerate(top)}
    return np.array([index.get(v, k) for v in values])


def main(dump_dir: str, out_dir: str) -> None:
    config = features.load()
    products = []
    for path in sorted(glob.glob(dump_dir + "*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            products += [json.loads(line) for line in lines]
    columns = {}
    for feature in config.features:
        values = [p.get(feature.name) for p in products]
        if feature.kind == "text":
            vectoriser = TfidfVectorizer(max_features=feature.vocab_size, token_pattern=r"(?u)\b\w{1,30}\b")
            columns[feature.name] = vectoriser.fit_transform(clean(v) for v in values)
        elif feature.kind == "categorical":
            codes = top_k_codes([clean(v).strip() for v in values], feature.vocab_size)
            columns[feature.name] = sp.csr_matrix(codes.reshape(-1, 1))
        elif feature.kind == "dense":
            numbers = np.array([float(v) if isinstance(v, (int, float)) else 0.0 for v in values])
            numbers = np.log1p(np.maximum(numbers, 0)) if feature.transform == "log" else numbers
            columns[feature.name] = sp.csr_matrix(((numbers - numbers.mean()) / (numbers.std() or 1)).reshape(-1, 1))
    rules = MultiLabelBinarizer(sparse_output=True).fit_transform(p.get("rule_labels") or [] for p in products)
    exclusive = LabelEncoder().fit_transform([p.get("exclusive_label") or "" for p in products])
    sp.save_npz(f"{out_dir}/features.npz", sp.hstack(list(columns.values())).tocsr())
    sp.save_npz(f"{out_dir}/rule_labels.npz", rules.tocsr())
    np.save(f"{out_dir}/exclusive.npy", exclusive)


if __name__ == "__main__":
    main(*sys.argv[1:3])
