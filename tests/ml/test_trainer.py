"""The trainer: metrics, hyperparameters, the controller's checks, and a train → export round trip."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from shared_config import storage
from shared_config.runs import create_run, run_version
from store import demo_catalog
from tests.ml.test_preprocessing import run_job
from trainer import metrics
from trainer.controller import main as controller_main
from trainer.hparams import HParams


def test_exclusive_metrics_on_a_hand_made_case():
    labels = np.array([0, 0, 1, 2])
    probabilities = np.array([[.9, .1, 0], [.2, .8, 0], [.1, .9, 0], [.5, .4, .1]])
    result = metrics.exclusive_metrics(labels, probabilities, ["a", "b", "c"])
    assert result["accuracy"] == 0.5
    assert result["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert result["per_class"]["b"]["precision"] == 0.5 and result["per_class"]["b"]["recall"] == 1
    assert result["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    # rows are the truth, columns the prediction: one a->a, one a->b, b->b, c->a
    assert result["confusion"] == {"classes": ["a", "b", "c"],
                                   "matrix": [[1, 1, 0], [0, 1, 0], [1, 0, 0]]}


def test_macro_f1_is_scikit_learns_on_hand_made_predictions():
    from sklearn.metrics import f1_score

    names = ["a", "b", "c", "d", "e"]
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    # class 3 is predicted but absent from the labels; class 4 neither: sklearn counts 3 (F1 0)
    predicted = np.array([0, 3, 1, 0, 2, 2, 1])
    probabilities = np.eye(len(names))[predicted]
    result = metrics.exclusive_metrics(labels, probabilities, names)
    expected = f1_score(labels, predicted, average="macro")
    assert result["macro_f1"] == pytest.approx(expected)
    # by hand: F1 a 0.5, b 0.5, c 0.8, d 0 over four classes
    assert result["macro_f1"] == pytest.approx((0.5 + 0.5 + 0.8 + 0) / 4)
    assert metrics.macro_f1(labels, predicted) == pytest.approx(expected)


def test_rule_based_metrics_use_the_threshold():
    labels = np.array([[1, 0], [1, 1], [0, 0]])
    probabilities = np.array([[.7, .6], [.4, .9], [.1, .2]])
    result = metrics.rule_based_metrics(labels, probabilities, ["x", "y"], threshold=0.5)
    assert result["micro_precision"] == pytest.approx(2 / 3)
    assert result["micro_recall"] == pytest.approx(2 / 3)
    assert result["per_class"]["y"]["support"] == 1


def test_rule_based_roc_auc_is_scikit_learns_and_early_stopping_scores_the_same_f1(monkeypatch):
    from sklearn.metrics import roc_auc_score

    monkeypatch.setattr(metrics, "AUC_COLUMNS_AT_ONCE", 7)  # columns ranked a few at a time

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 30)) < 0.2).astype("float32")
    labels[:, 0], labels[:, 1] = 0, 1  # one outcome only: no ROC-AUC
    probabilities = np.round(rng.random((200, 30)), 1)  # many ties
    result = metrics.rule_based_metrics(labels, probabilities, [str(c) for c in range(30)], 0.5)
    for column in range(2, 30):
        assert result["per_class"][str(column)]["roc_auc"] == pytest.approx(
            roc_auc_score(labels[:, column], probabilities[:, column]), abs=1e-12)
    assert result["per_class"]["0"]["roc_auc"] is None
    assert result["per_class"]["1"]["roc_auc"] is None
    assert metrics.rule_based_macro_f1(labels, probabilities, 0.5) == result["macro_f1"]
    assert 0 < result["macro_f1"] < 1


def test_hparams_id_follows_the_hyperparameters():
    assert HParams().hparams_id == HParams().hparams_id
    assert HParams(epochs=3).hparams_id != HParams().hparams_id
    assert HParams.from_dict(HParams(hidden_units=(8,)).to_dict()) == HParams(hidden_units=(8,))
    with pytest.raises(ValueError):
        HParams(model_type="forest")
    with pytest.raises(ValueError, match="rule_sampled_categories"):
        HParams(rule_sampled_categories=-1)
    with pytest.raises(ValueError):
        HParams(objectives=("exclusive", "sentiment"))
    with pytest.raises(ValueError, match="encoder_pretraining"):
        HParams(encoder_pretraining="masked")


@pytest.mark.parametrize("argv, complaint", [
    (["train", "--run-id", "../x"], "not allowed"),
    (["train", "--run-id", "ok", "--objectives", "nope"], "objectives"),
    (["evaluate", "--run-id", "ok", "--hparams-id", "a/b"], "not allowed"),
    (["train", "--run-id", "ok", "--epochs", "0"], "positive"),
    (["train", "--run-id", "ok", "--encoder-pretraining", "masked"], "invalid choice"),
])
def test_controller_refuses_bad_arguments(argv, complaint, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PRODCAT_PREFIX", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        controller_main(argv)
    assert exit_info.value.code == 2 and complaint in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def raw_example(product: dict) -> bytes:
    """A product's raw fields as the serving signature takes them."""
    def feature(value):
        if isinstance(value, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(value).encode()]))

    fields = ("id", "title", "description", "brand", "raw_category", "gender", "size", "price",
              "image")
    return tf.train.Example(features=tf.train.Features(feature={
        name: feature(product[name]) for name in fields})).SerializeToString()


def preprocessed_run(tmp_path, monkeypatch, count: int, seed: int, exclusive_fraction: float):
    """A run of the job over ``count`` demo products, its prefix the trainer's; ``(paths,
    products)``."""
    products = list(demo_catalog.generate(count, seed=seed, exclusive_fraction=exclusive_fraction))
    for product in products:
        product.pop("_true_category")
    paths, _ = run_job(tmp_path, [json.dumps(p) for p in products])
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    create_run(paths, {})
    return paths, products


def test_train_predict_and_export_serve_raw_products(tmp_path, monkeypatch):
    paths, products = preprocessed_run(tmp_path, monkeypatch, 400, 2, 0.3)
    controller_main(["train_and_predict", "--run-id", "job", "--epochs", "3"])
    controller_main(["export", "--run-id", "job", "--epochs", "3"])
    hparams_id = HParams(epochs=3).hparams_id
    assert storage.exists(paths.checkpoints(hparams_id) + "hparams.json")
    assert len(storage.glob(paths.predictions_dir + "part-*.jsonl.gz")) == 1

    served = tf.saved_model.load(paths.checkpoints(hparams_id) + "saved_model")
    serve = served.signatures["serving_default"]
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "rb") as raw, \
            gzip.open(raw, "rt") as lines:
        predicted = {row["id"]: row for row in map(json.loads, lines)}
    sample = products[:20]
    outputs = serve(examples=tf.constant([raw_example(p) for p in sample]))
    exclusive = outputs["exclusive"].numpy()
    np.testing.assert_allclose(exclusive.sum(axis=1), 1.0, rtol=1e-4)
    names = [v.decode() for v in
             tft.TFTransformOutput(paths.transform_fn_dir).vocabulary_by_name("exclusive")]
    for product, scores in zip(sample, exclusive):
        expected = predicted[product["id"]]["exclusive"]
        assert names[int(scores.argmax())] == expected["category"]
        assert expected["top"][0]["category"] == expected["category"]
        assert expected["path"][-1] == expected["category"] and len(expected["top"]) <= 5
        assert predicted[product["id"]]["version"] == run_version(paths) * 1000 + 1
        assert float(scores.max()) == pytest.approx(expected["score"], abs=1e-3)

    # every product's top categories per objective: its best scores in the model's full
    # output, best first, each under its own category; rule categories above the threshold
    from trainer import data, task

    model, hparams = task.load_trained(paths, hparams_id)
    vocabs = task.vocabularies(paths)
    checked = 0
    for inputs, ids in data.dataset(data.catalog_files(paths), vocabs, 512, keep_ids=True):
        outputs = {o: v.numpy() for o, v in model(inputs, training=False).items()}
        for row, product_id in enumerate(ids.numpy()):
            record = predicted[product_id.decode()]
            for objective, listed in (("exclusive", record["exclusive"]["top"]),
                                      ("rule_based", record["rule_based"])):
                scores, names = outputs[objective][row], vocabs.labels(objective)
                best = np.sort(scores)[::-1][:5]
                if objective == "rule_based":
                    best = best[best >= hparams.rule_threshold]
                assert [c["score"] for c in listed] == pytest.approx(best, abs=1e-4)
                assert [c["score"] for c in listed] == pytest.approx(
                    [scores[names.index(c["category"])] for c in listed], abs=1e-4)
            checked += 1
    assert checked == len(products) and any(r["rule_based"] for r in predicted.values())


def test_a_checkpoint_is_reused_only_on_the_same_preprocessing_output(tmp_path, monkeypatch):
    from beam_pipelines.preprocess import run
    from tests.ml.test_preprocessing import POLICY

    products = list(demo_catalog.generate(200, seed=5, exclusive_fraction=0.5))
    for product in products:
        product.pop("_true_category")
    paths, _ = run_job(tmp_path, [json.dumps(p) for p in products])
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    create_run(paths, {})
    flags = ["--run-id", "job", "--epochs", "1", "--model-type", "linear"]

    def train(*extra, stage="train"):
        controller_main(["train", *flags, *extra])
        return storage.read_json(paths.stats_file(stage))

    first = train()
    assert first["resumed_at_epoch"] == 0
    # the epoch's training time, and the rate of its rows
    assert len(first["epoch_seconds"]) == 1 and first["epoch_seconds"][0] > 0
    assert first["rows_per_second"] > 0
    resumed = train()
    assert resumed["resumed_at_epoch"] == 1  # the same output: nothing left to train
    assert resumed["epoch_seconds"] == [] and resumed["rows_per_second"] is None
    # preprocess again, with a shard of an older layout lying around: it goes, and the
    # checkpoint made on the old vocabularies is not reused
    stale = paths.tfrecords("catalog", "train") + "-00007-of-00009"
    with storage.open_file(stale, "wb") as handle:
        handle.write(b"stale")
    run(paths, [], 1.0, POLICY)
    assert not storage.exists(stale)
    again = train()
    assert again["resumed_at_epoch"] == 0
    assert again["preprocess_output_id"] != first["preprocess_output_id"]
    # a baseline of the very same hyperparameters trains in a directory of its own
    baseline = train("--role", "baseline", stage="baseline_train")
    assert baseline["resumed_at_epoch"] == 0 and baseline["model_dir"] != again["model_dir"]


def test_each_predict_of_a_run_is_a_newer_prediction_set_and_a_newer_run_newer_still(
        tmp_path):
    from shared_config.paths import RunPaths
    from shared_config.runs import next_prediction_version

    older = RunPaths.for_run("older", str(tmp_path))
    create_run(older, {})
    first, second = next_prediction_version(older), next_prediction_version(older)
    newer = RunPaths.for_run("newer", str(tmp_path))
    storage.write_json(newer.manifest, {**storage.read_json(older.manifest),
                                        "created_at": "2999-01-01T00:00:00+00:00"})
    assert first < second < next_prediction_version(newer)


def test_the_steady_rate_leaves_the_first_epoch_out_and_takes_the_median():
    from trainer.training import steady_rate

    # the first epoch traces the step: slow, and not counted
    assert steady_rate([30.0, 4.0, 5.0, 4.0], 1000) == 250.0
    assert steady_rate([8.0], 1000) == 125.0  # one epoch: its own rate
    assert steady_rate([], 1000) is None
