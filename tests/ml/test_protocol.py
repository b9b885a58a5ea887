"""The evaluation protocol: splits by product group, and the peer on the model's own rows."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from shared_config import categories
from shared_config.paths import SPLITS
from shared_config.splits import group_key, split_of
from store import demo_catalog
from tests.ml.test_preprocessing import read_examples, run_job
from trainer import peer
from trainer.metrics import macro_f1 as trainer_macro_f1


def test_a_group_key_is_the_feeds_group_id_else_the_listing_id():
    assert group_key({"id": "a-1", "group_id": "P7"}, "group_id") == "group:P7"
    assert group_key({"id": "a-1", "group_id": 7}, "group_id") == "group:7"
    assert group_key({"id": "a-1", "group_id": "  "}, "group_id") == "a-1"
    assert group_key({"id": "a-1"}, "group_id") == "a-1"
    assert group_key({"id": "a-1", "group_id": "P7"}, "") == "a-1"  # no group field configured
    # the listings of one product share a split whatever their own ids
    assert len({split_of({"id": f"x-{i}", "group_id": "P7"}, "group_id")
                for i in range(200)}) == 1
    # listings without a group spread over every split
    assert {split_of({"id": f"x-{i}"}, "group_id") for i in range(200)} == set(SPLITS)


def test_the_job_keeps_every_products_listings_in_one_split(tmp_path):
    products = []
    for group in range(60):  # 60 real products, 1 to 5 listings each
        for listing in range(group % 5 + 1):
            products.append({"id": f"aff{listing}-{group:03d}-{listing}",
                             "group_id": f"product-{group}", "title": f"dress number {group}",
                             "price": 10 + group})
    products.append({"id": "loner", "title": "a shirt", "price": 5})  # no group: its own
    paths, summary = run_job(tmp_path, [json.dumps(p) for p in products])
    assert summary["quarantined"] == 0
    split_of_listing = {e["id"].decode(): split for split in SPLITS
                        for e in read_examples(paths, "catalog", split)}
    assert set(split_of_listing) == {p["id"] for p in products}  # every listing, once
    by_group = defaultdict(set)
    for product in products:
        by_group[product.get("group_id", product["id"])].add(split_of_listing[product["id"]])
    assert all(len(splits) == 1 for splits in by_group.values())
    assert len({next(iter(s)) for s in by_group.values()}) >= 2  # groups do spread
    for product in products:  # and the job agrees with the shared split function
        assert split_of_listing[product["id"]] == split_of(product, "group_id")


def test_a_group_id_that_is_not_an_id_goes_to_the_quarantine(tmp_path):
    lines = [json.dumps({"id": "ok", "title": "dress", "group_id": "g1"}),
             json.dumps({"id": "bad", "title": "dress", "group_id": {"nested": 1}})]
    _, summary = run_job(tmp_path, lines)
    assert summary["quarantined"] == 1
    assert summary["quarantined_by_reason"] == {"wrong_type": 1}


def test_rule_categories_name_exclusive_classes_through_the_tree():
    classes = ["Bottoms > Jeans", "Tops > Knits", "Tops > Blouses"]
    assert categories.candidate_classes(["Tops", "Tops > Knits"], classes) == [1]
    assert categories.candidate_classes(["Tops"], classes) == [1, 2]  # above: every one below
    # the most specific labels name: a parent with a label below it says nothing more
    assert categories.candidate_classes(["Bottoms", "Tops", "Tops > Knits"], classes) == [0, 1]
    assert categories.candidate_classes(["Shoes"], classes) == []  # elsewhere in the tree
    assert categories.candidate_classes(["Tops > Knits > Tees"], classes) == [1]  # below one
    assert categories.pseudo_label(["Tops > Knits", "Bottoms > Jeans"], classes) == -1
    assert categories.pseudo_label(["Bottoms", "Bottoms > Jeans"], classes) == 0
    assert not categories.is_within("Tops > Knitsy", "Tops > Knits")


def test_the_peer_learns_from_the_same_rows_as_the_model(tmp_path, monkeypatch):
    products = list(demo_catalog.generate(300, seed=5, exclusive_fraction=0.4))
    for i, product in enumerate(products):
        product.pop("_true_category")
        product["group_id"] = f"real-{i // 3}"  # three listings per real product
    paths, _ = run_job(tmp_path, [json.dumps(p) for p in products])
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    result = peer.fit_peer(paths)
    # what the model's exclusive head trains on: the exclusive_train TFRecords
    model_rows = [e["id"].decode() for e in read_examples(paths, "exclusive", "train")]
    expected = [p["id"] for p in products
                if p.get("exclusive_label") and split_of(p, "group_id") == "train"]
    assert sorted(model_rows) == sorted(expected)
    assert result["trained_on"] == len(expected)
    assert result["trained_on_digest"] == peer.rows_digest(model_rows)
    valid = [p for p in products if p.get("exclusive_label") and split_of(p, "group_id") == "valid"]
    figures = result["objectives"]["exclusive"]
    assert figures["examples"] == len(valid)
    assert figures["accuracy"] > 0.5  # the generated titles name their category
    assert result["C"] in peer.CV_GRID

    # the model on the same run: encoder pretraining first, then early stopping on validation
    from shared_config.runs import create_run
    from trainer import task
    from trainer.hparams import HParams
    from trainer.ssl_gan import SSLGAN

    create_run(paths, {})
    pretrainings, pretrain = [], SSLGAN.pretrain_encoder

    def counted(model, *args):  # the real pretraining, its encoder's weights noted after it
        figures = pretrain(model, *args)
        pretrainings.append(model.encoder.get_weights())
        return figures

    monkeypatch.setattr(SSLGAN, "pretrain_encoder", counted)
    loads, load = [], task.keras.Model.load_weights
    monkeypatch.setattr(task.keras.Model, "load_weights",
                        lambda model, path, *a, **k: (loads.append(model.name),
                                                      load(model, path, *a, **k))[1])
    hparams = HParams(epochs=2, encoder_pretrain_epochs=1, early_stopping_patience=1,
                      hidden_units=(16,))
    trained = task.train(paths, hparams)
    assert len(trained["encoder_pretraining"]["reconstruction_loss"]) == 1
    # self-training's second network starts from the first's pretrained encoder: one pretraining
    assert trained["self_training"]["pseudo_labels"] > 0
    assert len(pretrainings) == 1 and loads == ["encoder"]
    encoder_dir = trained["model_dir"] + task.ENCODER_DIR
    kept = task.build(hparams, task.vocabularies(paths))
    task._pretrained_encoder(kept, paths, hparams, task.vocabularies(paths), None, 0,
                             encoder_dir, task.preprocess_output_id(paths))
    assert len(pretrainings) == 1  # loaded, not pretrained again
    assert all(np.array_equal(a, b) for a, b in zip(kept.encoder.get_weights(), pretrainings[0]))
    # kept weights of another preprocessing output are pretrained afresh
    accelerator = task.accelerators.choose()
    task._pretrained_encoder(kept, paths, hparams, task.vocabularies(paths), accelerator, 64,
                             encoder_dir, "another-output")
    assert len(pretrainings) == 2
    stopping = trained["early_stopping"]
    assert 1 <= stopping["best_epoch"] <= stopping["epochs_run"] <= 2
    assert 0 <= stopping["best_valid_macro_f1"] <= 1
    # with both objectives the epoch kept serves both heads: their mean validation macro-F1
    from trainer import metrics as trainer_metrics

    best = task._early_stopping(paths, HParams(hidden_units=(16,)), task.vocabularies(paths))
    model = task.build(HParams(hidden_units=(16,)), task.vocabularies(paths))
    best.set_model(model)
    best.on_epoch_end(0)
    exclusive = trainer_metrics.macro_f1(best.labels, best.predict(model))
    assert best.scores[0] == pytest.approx((exclusive + best.extra_score(model)) / 2)
    assert task._rule_based_score(paths, HParams(objectives=("exclusive",)),
                                  task.vocabularies(paths)) is None


def test_the_peers_c_comes_from_grouped_folds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    y = (x[:, 0] > 0).astype(int)
    groups = np.repeat(np.arange(30), 3)
    assert peer.cross_validated_c(x, y, groups) in peer.CV_GRID
    assert peer.cross_validated_c(x[:2], y[:2], groups[:2]) == 1.0  # too few groups to fold
    # the grid's fits in parallel choose what one fold after another would
    from sklearn.model_selection import GroupKFold

    noisy = (x[:, 0] + rng.normal(0, 1.5, 90) > 0).astype(int)
    folds = list(GroupKFold(n_splits=3).split(x, noisy, groups))
    mean_f1 = {c: np.mean([trainer_macro_f1(noisy[held], peer.balanced_logreg(c).fit(
        x[train], noisy[train]).predict(x[held])) for train, held in folds]) for c in peer.CV_GRID}
    expected = max(peer.CV_GRID, key=lambda c: (mean_f1[c], -c))
    assert peer.cross_validated_c(x, noisy, groups, n_jobs=2) == expected
    assert peer.cross_validated_c(x, noisy, groups, n_jobs=1) == expected


@pytest.mark.parametrize("ids", [["b", "a"], ["a", "b"]])
def test_the_rows_digest_ignores_order(ids):
    assert peer.rows_digest(ids) == peer.rows_digest(["a", "b"])


def test_without_two_labelled_classes_the_peer_steps_aside(tmp_path, monkeypatch):
    products = [{"id": f"p{i}", "title": f"dress {i}", "exclusive_label": "Dresses"}
                for i in range(40)]
    paths, _ = run_job(tmp_path, [json.dumps(p) for p in products])
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    result = peer.fit_peer(paths)
    assert "one class" in result["skipped"] and "objectives" not in result


def test_a_benchmark_variant_may_change_the_networks_shape():
    from benchmarks.networks import BENCHMARK_SHAPE, hparams_for

    shaped = hparams_for("ssl_gan_rules", 0, {"dropout": 0.5, "hidden_units": (512,)})
    assert shaped.dropout == 0.5 and shaped.hidden_units == (512,)
    assert shaped.batch_size == BENCHMARK_SHAPE["batch_size"]  # the rest of the shape stays
    plain = hparams_for("net_rules", 1, {})
    assert (plain.dropout, plain.hidden_units) == (BENCHMARK_SHAPE["dropout"],
                                                   BENCHMARK_SHAPE["hidden_units"])
    assert plain.real_fake_weight == 0 and plain.objectives == ("exclusive", "rule_based")


def test_the_self_training_peer_chooses_on_validation_and_never_below_its_weak_model():
    from scipy import sparse

    from benchmarks import peers
    from benchmarks.label_data import DataSet, Split

    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 3, n)
        x = sparse.csr_matrix(np.eye(3)[y] * 2 + rng.normal(size=(n, 3)) + 2)
        pseudo = np.where(rng.random(n) < 0.6, y, -1)  # rules: right where they speak
        pseudo[rng.random(n) < 0.15] = 0  # ... but for some noise
        return Split(x, y, np.arange(n).astype(str), pseudo=pseudo)

    data = DataSet("toy", split(600), split(200), split(200), ["a", "b", "c"], ["r"])
    labelled = np.zeros(600, bool)
    labelled[:12] = True
    weak = peers.run_peer("weak_supervision", data, labelled, 0)
    self_trained = peers.run_peer("weak_self_training", data, labelled, 0)
    assert set(self_trained["choice"]) >= {"C", "pseudo_weight"}
    assert trainer_macro_f1(data.valid.y, self_trained["valid"]) >= \
        trainer_macro_f1(data.valid.y, weak["valid"]) - 1e-9
    assert len(self_trained["test"]) == 200


def test_another_draw_of_the_split_moves_products_whole_and_draw_0_is_the_pipelines():
    from benchmarks.label_data import salted
    from shared_config.splits import split_for

    keys = [f"group:{i}" for i in range(2_000)]
    assert [split_for(salted(k, 0)) for k in keys] == [split_for(k) for k in keys]
    first, second = ([split_for(salted(k, draw)) for k in keys] for draw in (1, 2))
    # other products in each split, in about the same shares
    for drawn in (first, second):
        assert sum(a != b for a, b in zip(drawn, [split_for(k) for k in keys])) > 500
        assert 150 < drawn.count("test") < 250


def test_the_ensemble_averages_its_members_probabilities_over_seeds_of_its_own(monkeypatch):
    from benchmarks import networks

    seeds = []
    # two members lean weakly to class 0, one strongly to class 1: a vote says 0, the
    # average of the probabilities says 1
    answers = {3: [0.55, 0.45], 4: [0.55, 0.45], 5: [0.05, 0.95]}

    def member(method, data, labelled, seed, options, max_epochs):
        assert method == "ssl_gan_rules"
        seeds.append(seed)
        p = np.array([answers[seed]])
        return {"valid": p, "test": p, "epochs": 1}

    monkeypatch.setattr(networks, "run_probabilities", member)
    out = networks.run_network("ssl_gan_rules_x3", None, np.ones(1, bool), seed=1)
    assert seeds == [3, 4, 5]  # seed 1's members share no seed with seed 0's or 2's
    assert out["valid"].tolist() == [1] and out["test"].tolist() == [1]


def test_the_blend_weighs_the_peer_as_validation_says(monkeypatch):
    from scipy import sparse

    from benchmarks import label_efficiency, networks, peers
    from benchmarks.label_data import DataSet, Split

    rng = np.random.default_rng(1)

    def split(n):
        y = rng.integers(0, 3, n)
        x = sparse.csr_matrix(np.eye(3)[y] * 3 + rng.normal(size=(n, 3)) + 3)
        return Split(x, y, np.arange(n).astype(str), pseudo=np.where(rng.random(n) < 0.5, y, -1))

    data = DataSet("toy", split(300), split(120), split(90), ["a", "b", "c"], ["r"])
    labelled = np.zeros(300, bool)
    labelled[:30] = True

    def network(wrong: bool):
        def probabilities(method, data_, labelled_, seed, options):
            assert method == "ssl_gan_rules" and data_ is data
            # a network sure of the class after the true one, or sure of the true one
            return {s: np.eye(3)[(getattr(data, s).y + wrong) % 3] * 0.9 + 0.1 / 3
                    for s in ("valid", "test")}
        return probabilities

    peer = peers.run_peer("weak_self_training", data, labelled, 0)
    monkeypatch.setattr(networks, "run_probabilities", network(wrong=True))
    out = label_efficiency.run("blend", data, labelled, 0, {})
    assert out["choice"] == {"peer_weight": 1.0}  # the wrong network gets no say
    assert out["test"].tolist() == peer["test"].tolist()
    monkeypatch.setattr(networks, "run_probabilities", network(wrong=False))
    out = label_efficiency.run("blend", data, labelled, 0, {})
    assert out["choice"]["peer_weight"] < 0.5 and out["test"].tolist() == data.test.y.tolist()


def test_a_variant_may_have_the_peer_pick_self_trainings_pseudo_labels(monkeypatch):
    from types import SimpleNamespace

    from scipy import sparse

    from benchmarks import networks
    from benchmarks.label_data import DataSet, Split

    rng = np.random.default_rng(2)

    def split(n):
        y = rng.integers(0, 3, n)
        x = sparse.csr_matrix(np.eye(3)[y] * 3 + rng.normal(size=(n, 3)) * 0.3 + 3)
        return Split(x, y, np.arange(n).astype(str), pseudo=np.where(rng.random(n) < 0.5, y, -1))

    data = DataSet("toy", split(300), split(60), split(60), ["a", "b", "c"], ["r"])
    labelled = np.zeros(300, bool)
    labelled[:30] = True
    fits = []

    def fit(method, data_, y, labelled_, seed, hparams, max_epochs, early_stopping=True, **_):
        fits.append(y.copy())
        return "network", SimpleNamespace(scores=[0.5], best_epoch=0)

    # a network sure of the class after the true one: its pseudo-labels are all wrong
    monkeypatch.setattr(networks, "_fit", fit)
    monkeypatch.setattr(networks, "_logits", lambda model, x: 10.0 * np.roll(x, 1, axis=1))
    rights = {}
    for teacher in ("network", "peer", "network_and_peer"):
        out = networks.run_probabilities("ssl_gan_rules", data, labelled, 0,
                                         {networks.TEACHER: teacher, "self_training_per_class": 20})
        assert out["pseudo_labels"] > 0
        rights[teacher] = out["pseudo_right"]
        picked = fits[-1] != data.train.y
        assert not picked[labelled].any()  # human labels always win
    assert rights["network"] == 0.0 and rights["peer"] > 0.9
    with pytest.raises(ValueError, match="self_training_teacher"):
        networks.run_probabilities("ssl_gan_rules", data, labelled, 0,
                                   {networks.TEACHER: "oracle"})


def test_validation_halves_on_several_draws_never_read_the_test_split(capsys):
    from scipy import sparse

    from benchmarks import label_efficiency
    from benchmarks.label_data import DataSet, Split

    rng = np.random.default_rng(0)

    def split(n, width=3):
        y = rng.integers(0, 3, n)
        x = sparse.csr_matrix(np.eye(3)[y] * 2 + rng.normal(size=(n, 3)) + 2)
        if width != 3:  # a test split no model could score: reading it would fail
            x = sparse.csr_matrix(np.ones((n, width)))
        return Split(x, y, np.array([f"p{i // 3}" for i in range(n)]))

    draws = [DataSet("toy", split(300), split(120), split(60, width=7), ["a", "b", "c"], [])
             for _ in range(2)]
    label_efficiency.validation_halves(draws, [0.2], ["logreg"], seeds=1)
    printed = capsys.readouterr().out
    assert printed.count("draw 0, half") == 2 and printed.count("draw 1, half") == 2
    rows = [line.split() for line in printed.splitlines() if line.startswith("20%")]
    assert [row[2] for row in rows] == ["A", "B", "both"]
    assert all(0 <= float(row[4]) <= 100 for row in rows)


def test_the_variant_table_scores_the_chosen_variants_on_validation_only(monkeypatch, capsys):
    from benchmarks import label_efficiency, networks
    from benchmarks.label_data import DataSet, Split

    y = np.array([0, 1, 2, 0, 1, 2])
    split = Split(np.zeros((6, 1)), y, np.arange(6).astype(str))
    unreadable = Split(None, None, None)  # reading the test split would fail
    data = DataSet("toy", split, split, unreadable, ["a", "b", "c"], [])

    def network(method, data_, labelled, seed, options):
        # the defaults answer right, their pseudo-labels right 60% and 80% of the time; a
        # variant that weighs the GAN differently, always "a", with no self-training
        if not options:
            return {"valid": y, "pseudo_right": 0.6 + 0.2 * seed}
        return {"valid": np.zeros(6, int), "pseudo_right": None}

    monkeypatch.setattr(networks, "run_network", network)
    label_efficiency.variant_table(data, [0.5], seeds=2, only=["GAN: real/fake"])
    lines = capsys.readouterr().out.splitlines()[2:]
    assert [line.split()[0] for line in lines] == ["defaults", "its", "GAN:", "GAN:"]
    assert float(lines[0].split()[-1]) == 100.0
    assert lines[1].split()[-1] == "70%"  # the seeds' mean
    assert all(float(line.split()[-1]) < 100.0 for line in lines[2:])
    # one column for the scores, whatever the variants' names
    assert len({len(line) for line in lines}) == 1


def test_at_inference_the_rules_classes_weigh_in_on_validation_only(monkeypatch, capsys):
    from scipy import sparse

    from benchmarks import label_efficiency, networks
    from benchmarks.label_data import DataSet, Split

    rng = np.random.default_rng(2)

    def split(n):
        y = rng.integers(0, 3, n)
        x = sparse.csr_matrix(np.eye(3)[y] * 3 + rng.normal(size=(n, 3)) + 3)
        # the rules name the true class of half the products, nothing for the others
        named = np.eye(3)[y] * (np.arange(n) % 2 == 0)[:, None]
        return Split(x, y, np.arange(n).astype(str), candidates=named,
                     pseudo=np.where(named.sum(axis=1) > 0, y, -1))

    # the peer predicts the test products as it always does, but their labels are not read
    unlabelled_test = Split(split(60).x, None, None)
    data = DataSet("toy", split(300), split(120), unlabelled_test, ["a", "b", "c"], ["r"])

    def network(method, data_, labelled, seed, options=None):
        assert method == "ssl_gan_rules" and data_ is data
        # 0.6 on the class after the true one, 0.2 on each other: only a strong enough
        # weight on the rules' class turns round the products the rules name
        return {"valid": np.eye(3)[(data.valid.y + 1) % 3] * 0.4 + 0.2}

    monkeypatch.setattr(networks, "run_probabilities", network)
    label_efficiency.inference_table(data, [0.2], seeds=1)
    rows = {line[:40].strip(): [float(v) for v in line[40:].split()]
            for line in capsys.readouterr().out.splitlines()[2:]}
    assert list(rows) == list(label_efficiency.AT_INFERENCE)
    network_scores = {name: scores[0] for name, scores in rows.items()}
    assert network_scores["as trained"] == 0.0
    # e^0.5 and e^1 are not enough (0.33 and 0.54 against 0.6); e^2 is (1.48)
    assert network_scores["rules' classes weighed in, e^1"] == 0.0
    assert 40 < network_scores["rules' classes weighed in, e^2"] < 100
    assert all(0 <= scores[1] <= 100 for scores in rows.values())  # the peer's column


def test_a_network_of_the_benchmark_repeats_itself_for_a_seed_and_not_for_another(monkeypatch):
    """Variants are read against the defaults of the same run to a tenth of a point: the
    same seed must give the same network, self-training included."""
    from scipy import sparse

    from benchmarks import networks
    from benchmarks.label_data import DataSet, Split

    rng = np.random.default_rng(5)

    def split(n):
        y = rng.integers(0, 3, n)
        x = sparse.csr_matrix(np.eye(3)[y] * 2 + rng.normal(size=(n, 3)) + 2)
        return Split(x, y, np.arange(n).astype(str))

    data = DataSet("toy", split(400), split(60), split(60), ["a", "b", "c"], [])
    labelled = np.zeros(400, bool)
    labelled[::10] = True
    options = {"self_training_per_class": 5}
    runs = [networks.run_probabilities("ssl_gan", data, labelled, seed, options, max_epochs=2)
            for seed in (0, 0, 1)]
    assert runs[0]["pseudo_labels"] == 15
    assert np.array_equal(runs[0]["valid"], runs[1]["valid"])
    assert np.array_equal(runs[0]["test"], runs[1]["test"])
    assert not np.array_equal(runs[0]["valid"], runs[2]["valid"])

    # with encoder pretraining, self-training's second network starts from the first's
    # pretrained encoder, as the trainer's does: one pretraining per method
    from trainer.ssl_gan import SSLGAN

    pretrainings, pretrain = [], SSLGAN.pretrain_encoder

    def counted(model, *args):
        pretrainings.append(model)
        return pretrain(model, *args)

    monkeypatch.setattr(SSLGAN, "pretrain_encoder", counted)
    run = networks.run_probabilities("ssl_gan", data, labelled, 0,
                                     {**options, "encoder_pretrain_epochs": 1}, max_epochs=2)
    assert run["pseudo_labels"] == 15 and len(pretrainings) == 1


def test_early_stopping_may_read_another_score_than_macro_f1():
    import keras

    from benchmarks.networks import _log_likelihood
    from trainer import training

    labels = np.array([0, 1])
    # each epoch's probability of the true classes, the other 9 classes sharing the rest: all
    # right each time, and every log-likelihood under -1
    sure = [0.2, 0.3, 0.25]
    epochs = [np.where(np.eye(10)[labels] == 1, p, (1 - p) / 9) for p in sure]

    def best_epoch(**score):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        predictions = iter(epochs)
        best = training.BestOnValidation(
            lambda m: next(predictions) if score else next(predictions).argmax(axis=1),
            labels, patience=5, **score)
        best.set_model(model)
        for epoch in range(3):
            best.on_epoch_end(epoch)
        return best.best_epoch, best.best

    assert best_epoch() == (0, 1.0)  # macro-F1 is 1 at once and never better
    epoch, score = best_epoch(score=_log_likelihood)
    assert epoch == 1 and score == pytest.approx(np.log(0.3))


def test_the_wide_path_may_start_as_the_weak_supervision_peer():
    from scipy import sparse

    from benchmarks import networks
    from benchmarks.label_data import DataSet, Split
    from benchmarks.peers import run_peer
    from trainer.peer import class_probabilities
    from trainer.self_training import softmax

    rng = np.random.default_rng(3)

    def split(n, classes):
        y = rng.integers(0, classes, n)
        x = sparse.csr_matrix(np.abs(np.eye(4)[y] * 2 + rng.normal(size=(n, 4))))
        return Split(x, y, np.arange(n).astype(str), pseudo=np.where(rng.random(n) < 0.5, y, -1))

    for classes in (4, 2):  # a multinomial peer, and one column for two classes
        data = DataSet("toy", split(300, classes), split(60, classes), split(60, classes),
                       [str(c) for c in range(4)], [])
        labelled = np.zeros(300, bool)
        labelled[::10] = True
        kernel, bias = networks.peer_linear_path(data, labelled, 0)
        peer = run_peer("weak_supervision", data, labelled, 0)["model"]
        x = data.valid.x.toarray()
        expected = class_probabilities(peer, data.valid.x, 4)
        assert np.allclose(softmax(x @ kernel + bias), expected, atol=1e-4)
        assert (expected[:, classes:] == 0).all()  # classes the peer never saw: never named
    # frozen, the path stays the peer through training; trainable, training moves it
    for trainable in (False, True):
        hparams = networks.hparams_for("ssl_gan", 0, {"wide": True})
        model, _ = networks._fit("ssl_gan", data, data.train.y, labelled, 0, hparams, 1,
                                 peer_path=((kernel, bias), trainable))
        after = model.wide.get_layer("exclusive_wide").get_weights()
        assert np.array_equal(after[0], kernel) != trainable
    with pytest.raises(ValueError, match="wide_from_peer"):
        networks.run_probabilities("ssl_gan", data, labelled, 0, {"wide_from_peer": "on"})
