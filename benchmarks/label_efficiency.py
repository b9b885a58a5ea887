"""Label-efficiency benchmark: macro-F1 and accuracy as the share of labelled rows grows.

Women's clothing reviews (title + text -> one of the 20 ``Class`` labels, a fixed
test split by hashing the review's id), with 1%, 2%, 5%, 10% and 100% of the
training rows labelled, over several seeds, for:
- ``tfidf_logreg``: TF-IDF + scikit-learn ``LogisticRegression`` (labelled rows);
- ``label_spreading``: scikit-learn ``LabelSpreading`` (knn kernel) over every
  training row, on a 100-dimension SVD of the TF-IDF (knn on raw TF-IDF is far slower);
- ``dnn``: prodcat's network, supervised only (labelled rows);
- ``ssl_gan``: prodcat's SSL-GAN (labelled rows + every unlabelled training row);
- ``ssl_gan_rules``: the SSL-GAN with the rule-based objective added (the legacy
  rules' labels on every training row);
- ``net_supervised`` and ``net_rules``: ablations, the same two with the GAN's
  real/fake term switched off (``real_fake_weight=0``): the SSL-GAN's network,
  batches and schedule, trained on the labels alone, so the GAN's own share of
  any gain shows.
Fashion-MNIST (``--dataset fashion_mnist``): the same methods but the rule-based
one, with 100 and 1,000 labelled images.

    .venvs/ml/bin/python -m benchmarks.label_efficiency [--seeds 3] [--dataset reviews]
        [--budgets 0.01,0.02] [--ssl-epochs 10] [--ssl-options JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.decomposition import TruncatedSVD  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.semi_supervised import LabelSpreading  # noqa: E402

from catalog_data import fashion_mnist, sources  # noqa: E402
from catalog_data.reviews_catalog import REVIEWS_MEMBER  # noqa: E402
from catalog_data.rules import RuleLabeller  # noqa: E402
from shared_config.splits import split_for  # noqa: E402
from trainer.hparams import HParams  # noqa: E402
from trainer.model import ModelInput, build_model  # noqa: E402
from trainer.ssl_gan import build_ssl_gan  # noqa: E402

TEXT_FEATURES = 2000
BATCH = 128
SSL_EPOCHS = 10
SSL_OPTIONS: dict = {}  # extra SSL-GAN hyperparameters (--ssl-options), for trying variants


def reviews():
    table = pq.read_table(sources.fetch("reviews")[REVIEWS_MEMBER]).to_pandas()
    table = table[table["Class Name"].notna()].reset_index()
    texts = (table["Title"].fillna("") + " . " + table["Review Text"].fillna("")).tolist()
    classes = sorted(table["Class Name"].unique())
    labels = table["Class Name"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    is_test = np.array([split_for(f"review-{row}") == "test" for row in table["index"]])
    vectors = TfidfVectorizer(max_features=TEXT_FEATURES, sublinear_tf=True).fit_transform(texts)
    labeller = RuleLabeller.from_file()
    rule_lists = [labeller.labels({"title": t}) for t in texts]
    categories = sorted({c for labels_ in rule_lists for c in labels_})
    rules = np.zeros((len(texts), len(categories)), "float32")
    for row, found in enumerate(rule_lists):
        for category in found:
            rules[row, categories.index(category)] = 1
    return vectors.astype("float32"), labels, is_test, rules, len(classes)


def fashion():
    images, labels = fashion_mnist.load("train")
    test_images, test_labels = fashion_mnist.load("t10k")
    rng = np.random.default_rng(0)
    keep = rng.choice(len(images), 20_000, replace=False)  # a 20k pool keeps runs short
    vectors = np.concatenate([images[keep], test_images]).reshape(-1, 784).astype("float32") / 255
    all_labels = np.concatenate([labels[keep], test_labels]).astype(int)
    is_test = np.arange(len(vectors)) >= len(keep)
    return vectors, all_labels, is_test, None, 10


def keras_rows(x, y, labelled_mask, rules):
    rule_targets = rules if rules is not None else np.zeros((len(y), 1), "float32")
    return tf.data.Dataset.from_tensor_slices((
        {"x": x}, {"exclusive": y, "rule_based": rule_targets},
        {"exclusive": labelled_mask.astype("float32"),
         "rule_based": (rule_targets.sum(axis=1) > 0).astype("float32")}))


def dense(x):
    return x.toarray() if hasattr(x, "toarray") else x


def run_method(method, x_train, y_train, labelled, x_test, rules, classes, seed):
    keras.utils.set_random_seed(seed)
    if method == "tfidf_logreg":
        model = LogisticRegression(max_iter=2000, C=10.0)
        return model.fit(x_train[labelled], y_train[labelled]).predict(x_test)
    if method == "label_spreading":
        svd = TruncatedSVD(100, random_state=seed).fit(x_train)
        partial = np.where(labelled, y_train, -1)
        model = LabelSpreading(kernel="knn", n_neighbors=10, max_iter=50)
        return model.fit(svd.transform(x_train), partial).predict(svd.transform(x_test))
    specs = [ModelInput("x", "vector", x_train.shape[1])]
    n_rules = rules.shape[1] if rules is not None else 1
    x_dense = dense(x_train)
    if method == "dnn":
        hparams = HParams(model_type="dnn", objectives=("exclusive",), hidden_units=(256,),
                          dropout=0.3, seed=seed)
        model = build_model(hparams, specs, {"exclusive": classes, "rule_based": n_rules})
        rows = keras_rows(x_dense[labelled], y_train[labelled], np.ones(labelled.sum()), None)
        data = rows.shuffle(10_000, seed=seed).repeat().batch(BATCH)
        model.fit(data.map(lambda x, y, w: (x, {"exclusive": y["exclusive"]})),
                  steps_per_epoch=100, epochs=10, verbose=0)
        return model.predict({"x": dense(x_test)}, verbose=0)["exclusive"].argmax(axis=1)
    use_rules = method in ("ssl_gan_rules", "net_rules")
    options = {**SSL_OPTIONS, **({"real_fake_weight": 0.0} if method.startswith("net_") else {})}
    hparams = HParams(model_type="ssl_gan", hidden_units=(256,), dropout=0.3, seed=seed,
                      objectives=("exclusive", "rule_based") if use_rules else ("exclusive",),
                      **options)
    model = build_ssl_gan(hparams, specs, {"exclusive": classes, "rule_based": n_rules})

    def rows(keep):
        kept = keras_rows(x_dense[keep], y_train[keep], labelled[keep],
                          rules[keep] if use_rules else None)
        return kept if use_rules else kept.map(lambda x, y, w: (
            x, {"exclusive": y["exclusive"]}, {"exclusive": w["exclusive"]}))

    everything, only_labelled = rows(np.ones(len(y_train), bool)), rows(labelled)
    data = tf.data.Dataset.sample_from_datasets(
        [only_labelled.shuffle(10_000, seed=seed).repeat(),
         everything.shuffle(30_000, seed=seed).repeat()],
        [hparams.labelled_share, 1 - hparams.labelled_share], seed=seed).batch(BATCH)
    model.fit(data, steps_per_epoch=len(y_train) // BATCH, epochs=SSL_EPOCHS, verbose=0)
    return model.classifier().predict({"x": dense(x_test)}, verbose=0)["exclusive"].argmax(axis=1)


def main(argv=None) -> None:
    global SSL_EPOCHS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("reviews", "fashion_mnist"), default="reviews")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="tfidf_logreg,label_spreading,dnn,ssl_gan,"
                                              "ssl_gan_rules,net_supervised,net_rules")
    parser.add_argument("--budgets", help="comma-separated shares (0.01) or counts (100) of "
                                          "labelled rows (default: all of the data set's)")
    parser.add_argument("--ssl-epochs", type=int, default=SSL_EPOCHS,
                        help="epochs over every training row for the SSL-GAN")
    parser.add_argument("--ssl-options", type=json.loads, default={},
                        help='SSL-GAN hyperparameters to try, as JSON: \'{"entropy_weight": 0.1}\'')
    args = parser.parse_args(argv)
    SSL_EPOCHS = args.ssl_epochs
    SSL_OPTIONS.update(args.ssl_options)
    x, y, is_test, rules, classes = reviews() if args.dataset == "reviews" else fashion()
    x_train, y_train, x_test, y_test = x[~is_test], y[~is_test], x[is_test], y[is_test]
    rules_train = rules[~is_test] if rules is not None else None
    methods = [m for m in args.methods.split(",")
               if rules is not None or m not in ("ssl_gan_rules", "net_rules")]
    budgets = ([0.01, 0.02, 0.05, 0.10, 1.0] if args.dataset == "reviews" else [100, 1000])
    if args.budgets:
        budgets = [float(b) for b in args.budgets.split(",")]
    print(f"{args.dataset}: {len(y_train):,} training rows, {len(y_test):,} test rows, "
          f"{classes} classes, seeds 0..{args.seeds - 1}, SSL-GAN epochs {SSL_EPOCHS}"
          + (f", SSL-GAN options {json.dumps(SSL_OPTIONS)}" if SSL_OPTIONS else ""), flush=True)
    print(f"{'labelled':<10}{'method':<17}{'macro-F1':>16}{'accuracy':>16}{'seconds':>9}")
    for budget in budgets:
        count = int(round(budget * len(y_train))) if budget <= 1 else int(budget)
        for method in methods:
            f1s, accuracies, started = [], [], time.monotonic()
            for seed in range(args.seeds):
                labelled = np.zeros(len(y_train), bool)
                labelled[np.random.default_rng(seed).choice(len(y_train), count, replace=False)] = True
                predicted = run_method(method, x_train, y_train, labelled, x_test, rules_train,
                                       classes, seed)
                f1s.append(100 * f1_score(y_test, predicted, average="macro"))
                accuracies.append(100 * accuracy_score(y_test, predicted))
            name = f"{budget:.0%}" if budget <= 1 else f"{count}"
            print(f"{name:<10}{method:<17}{np.mean(f1s):>9.1f} ± {np.std(f1s):>4.1f}"
                  f"{np.mean(accuracies):>9.1f} ± {np.std(accuracies):>4.1f}"
                  f"{(time.monotonic() - started) / args.seeds:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
