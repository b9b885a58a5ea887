"""The label-efficiency benchmark's data sets, split the way the pipeline splits.

``reviews``: women's clothing reviews, title + text -> one of the 20 classes
(``Department > Class``, the demo catalogue's true categories). The split hashes
the real product (``Clothing ID``, the demo catalogue's ``group_id``) with the
pipeline's own ``shared_config.splits``: every review of a product is in one
split, so no test product has a sibling in training. The legacy rules label
every row (title and text); ``candidates`` are the classes its rule labels name
through the category tree, ``pseudo`` the class when they name exactly one.

``fashion_mnist``: 28x28 images as 784 pixels; a fixed 20,000-image pool of the
training images, split 8:1 into train and valid by hashing the image's index (an
image is its own group), and the 10,000 test images as test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from catalog_data import fashion_mnist, sources
from catalog_data.reviews_catalog import REVIEWS_MEMBER, group_id
from catalog_data.rules import RuleLabeller
from shared_config.categories import candidate_classes
from shared_config.splits import split_for

TEXT_FEATURES = 2000


@dataclass
class Split:
    x: object  # scipy CSR (reviews) or a dense array (images)
    y: np.ndarray
    groups: np.ndarray
    rules: np.ndarray | None = None  # multi-hot rule labels
    candidates: np.ndarray | None = None  # [rows, classes] 0/1: classes the rules name
    pseudo: np.ndarray | None = None  # the one class the rules name, else -1

    def __len__(self) -> int:
        return len(self.y)

    def take(self, rows) -> Split:
        pick = (lambda a: None if a is None else a[rows])
        return Split(self.x[rows], self.y[rows], self.groups[rows], pick(self.rules),
                     pick(self.candidates), pick(self.pseudo))


@dataclass
class DataSet:
    name: str
    train: Split
    valid: Split
    test: Split
    classes: list[str]
    rule_categories: list[str]

    @property
    def has_rules(self) -> bool:
        return self.train.rules is not None


def salted(key: str, draw: int) -> str:
    """The key the split hashes: the pipeline's own for draw 0, another draw of the products
    for each other number (the same products together, other products in each split)."""
    return key if draw == 0 else f"{key}#draw{draw}"


def reviews(max_features: int = TEXT_FEATURES, draw: int = 0) -> DataSet:
    table = pq.read_table(sources.fetch("reviews")[REVIEWS_MEMBER]).to_pandas()
    table = table[table["Class Name"].notna() & table["Department Name"].notna()]
    table = table.reset_index(drop=True)
    texts = (table["Title"].fillna("") + " . " + table["Review Text"].fillna("")).tolist()
    truth = (table["Department Name"] + " > " + table["Class Name"]).tolist()
    classes = sorted(set(truth))
    y = np.array([classes.index(t) for t in truth])
    groups = np.array([group_id(int(c)) for c in table["Clothing ID"]])
    splits = np.array([split_for(salted("group:" + g, draw)) for g in groups])
    labeller = RuleLabeller.from_file()
    rule_lists = [labeller.labels({"title": t}) for t in texts]
    rule_categories = sorted({c for found in rule_lists for c in found})
    rules = np.zeros((len(texts), len(rule_categories)), "float32")
    candidates = np.zeros((len(texts), len(classes)), "float32")
    for row, found in enumerate(rule_lists):
        rules[row, [rule_categories.index(c) for c in found]] = 1
        candidates[row, candidate_classes(found, classes)] = 1
    pseudo = np.where(candidates.sum(axis=1) == 1, candidates.argmax(axis=1), -1)
    train = splits == "train"
    # the vocabulary and IDF come from the training rows only (the unlabelled pool included)
    vectoriser = TfidfVectorizer(max_features=max_features, sublinear_tf=True)
    vectoriser.fit([t for t, keep in zip(texts, train) if keep])
    x = sparse.csr_matrix(vectoriser.transform(texts), dtype="float32")

    def part(name):
        rows = np.flatnonzero(splits == name)
        return Split(x[rows], y[rows], groups[rows], rules[rows], candidates[rows], pseudo[rows])

    return DataSet("reviews", part("train"), part("valid"), part("test"), classes,
                   rule_categories)


def fashion(pool: int = 20_000, draw: int = 0) -> DataSet:
    images, labels = fashion_mnist.load("train")
    test_images, test_labels = fashion_mnist.load("t10k")
    keep = np.sort(np.random.default_rng(0).choice(len(images), pool, replace=False))
    x = images[keep].reshape(-1, 784).astype("float32") / 255
    y = labels[keep].astype(int)
    groups = np.array([f"fashion-mnist-train-{i}" for i in keep])
    in_valid = np.array([split_for(salted(g, draw)) == "valid" for g in groups])
    # the hash split's test share joins train: Fashion-MNIST's own test images are the test
    test = Split(test_images.reshape(-1, 784).astype("float32") / 255,
                 test_labels.astype(int), np.array([f"fashion-mnist-t10k-{i}"
                                                    for i in range(len(test_labels))]))
    whole = Split(x, y, groups)
    return DataSet("fashion_mnist", whole.take(np.flatnonzero(~in_valid)),
                   whole.take(np.flatnonzero(in_valid)), test,
                   list(fashion_mnist.LABELS), [])


def load(name: str, draw: int = 0) -> DataSet:
    """A data set, split as the pipeline splits (``draw`` 0) or by another draw of the
    products (``salted``)."""
    return reviews(draw=draw) if name == "reviews" else fashion(draw=draw)


def labelled_rows(n_train: int, budget: float, seed: int) -> np.ndarray:
    """A boolean mask of the labelled training rows: a share (<= 1) or a count (> 1)."""
    count = round(budget * n_train) if budget <= 1 else int(budget)
    mask = np.zeros(n_train, bool)
    mask[np.random.default_rng(seed).choice(n_train, min(count, n_train), replace=False)] = True
    return mask
