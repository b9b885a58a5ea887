"""Active learning: the strategies' scores on hand-made cases, batch diversity, the split
rule, the labelling queue in the real store, and selection streamed over shards."""
from __future__ import annotations

import numpy as np
import pytest

from active_learning import strategies

# Three products over three classes: sure, torn between two, spread over all three.
SURE, TORN, SPREAD = [0.98, 0.01, 0.01], [0.49, 0.49, 0.02], [0.4, 0.3, 0.3]
P = np.array([SURE, TORN, SPREAD])


def order(scores) -> list[int]:
    return list(np.argsort(-np.asarray(scores), kind="stable"))


def test_uncertainty_strategies_order_hand_made_products():
    # least confidence: 1 - max p = 0.02, 0.51, 0.6
    assert strategies.least_confidence(P) == pytest.approx([0.02, 0.51, 0.6])
    assert order(strategies.least_confidence(P)) == [2, 1, 0]
    # margin: torn (0.49 vs 0.49) beats spread (0.4 vs 0.3)
    assert strategies.margin(P) == pytest.approx([1 - 0.97, 1.0, 0.9])
    assert order(strategies.margin(P)) == [1, 2, 0]
    # entropy: spread over three is the most uncertain
    assert strategies.entropy(P)[2] == pytest.approx(-(0.4 * np.log(0.4) + 0.6 * np.log(0.3)))
    assert order(strategies.entropy(P)) == [2, 1, 0]
    assert strategies.entropy(np.array([[1.0, 0.0]]))[0] == pytest.approx(0.0)


def test_the_committee_scores_disagreement_not_uncertainty():
    agree = np.array([[0.5, 0.5], [0.9, 0.1]])
    members = [agree, agree.copy(), np.array([[0.5, 0.5], [0.1, 0.9]])]
    # both products: the first is uncertain to every member but they agree; the second splits
    assert order(strategies.committee(members)) == [1, 0]
    assert strategies.committee(members)[0] == pytest.approx(0.0)
    votes = strategies.vote_entropy(members)
    assert votes[1] == pytest.approx(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))


def test_information_density_prefers_the_typical_among_the_uncertain():
    uncertainty = np.array([0.9, 0.9, 0.2])
    density = np.array([0.1, 0.8, 0.9])  # the first is an outlier
    assert order(strategies.information_density(uncertainty, density)) == [1, 2, 0]


def test_random_scores_depend_on_the_id_and_seed_not_the_order():
    ids = [f"p{i}" for i in range(1000)]
    scores = strategies.random_scores(ids, seed=1)
    assert strategies.random_scores(ids[::-1], seed=1) == pytest.approx(scores[::-1])
    assert not np.allclose(strategies.random_scores(ids, seed=2), scores)
    assert 0 <= scores.min() and scores.max() < 1 and abs(scores.mean() - 0.5) < 0.05


def test_a_diverse_batch_takes_one_listing_per_product_and_spreads_out():
    # five listings of one product are the five most uncertain; two other products follow
    scores = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.5, 0.4, 0.1])
    groups = ["g1"] * 5 + ["g2", "g3", "g4"]
    embeddings = np.eye(8)[[0, 0, 0, 0, 0, 1, 2, 3]].astype(float)
    picked = strategies.diverse_batch(scores, embeddings, groups, size=3)
    assert picked[0] == 0 and [groups[i] for i in picked] == ["g1", "g2", "g3"]
    # without diversity the top three would all be g1's listings
    assert [groups[i] for i in order(scores)[:3]] == ["g1", "g1", "g1"]
    # near-copies under different groups are avoided too: 5 is a copy of 0's embedding
    copies = np.eye(8)[[0, 1, 2, 3, 4, 0, 5, 6]].astype(float)
    picked = strategies.diverse_batch(np.array([.9, .2, .2, .2, .2, .85, .2, .2]), copies,
                                      [f"g{i}" for i in range(8)], size=2, weight=0.9)
    assert picked[0] == 0 and picked[1] != 5
    assert len(strategies.diverse_batch(scores, embeddings, groups, size=10)) == 4


def test_the_diversity_weight_trades_score_for_spread():
    # 0 and 1 are near-copies with the best scores; 2 is far from both and scores least
    scores = np.array([0.9, 0.8, 0.1])
    embeddings = np.array([[1.0, 0.0], [0.995, 0.0999], [0.0, 1.0]])
    groups = ["a", "b", "c"]
    assert strategies.diverse_batch(scores, embeddings, groups, size=2, weight=0.0) == [0, 1]
    assert strategies.diverse_batch(scores, embeddings, groups, size=2, weight=1.0)[1] == 2
    assert strategies.diverse_batch(scores, embeddings, groups, size=2,
                                    weight=strategies.DIVERSITY_WEIGHT) == [0, 2]


def test_the_benchmark_names_a_strategy_with_its_settings_or_refuses_it():
    from benchmarks.active_learning import parse_strategy

    assert parse_strategy("density_diverse:beta=2:weight=0.25") == (
        "density", True, {"beta": 2.0, "weight": 0.25})
    assert parse_strategy("margin") == (
        "margin", False, {"beta": 1.0, "weight": strategies.DIVERSITY_WEIGHT})
    for bad, reason in [("margin:beta=2", "density only"), ("density:weight=0.3", "diverse"),
                        ("oracle", "unknown strategy"), ("density:beta=x", "number"),
                        ("density:gamma=1", "unknown setting"),
                        ("density_diverse:weight=2", r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=reason):
            parse_strategy(bad)


# --- The selection stage on a small trained run, against the real store ----------------

import json  # noqa: E402

from shared_config import storage  # noqa: E402
from shared_config.splits import split_for  # noqa: E402


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run: demo products (five listings per product group), preprocessed, trained."""
    from shared_config.runs import create_run
    from store import demo_catalog
    from tests.ml.test_preprocessing import run_job
    from trainer.controller import main as controller_main

    tmp = tmp_path_factory.mktemp("selection")
    products = list(demo_catalog.generate(400, seed=9, exclusive_fraction=0.3))
    for i, product in enumerate(products):
        product.pop("_true_category")
        product["group_id"] = f"product-{i // 5}"
    paths, _ = run_job(tmp, [json.dumps(p) for p in products])
    create_run(paths, {})
    mp = pytest.MonkeyPatch()
    mp.setenv("PRODCAT_PREFIX", paths.prefix)
    controller_main(["train", "--run-id", paths.run_id, "--epochs", "2"])
    controller_main(["train", "--run-id", paths.run_id, "--epochs", "1", "--model-type", "dnn",
                     "--role", "baseline"])
    yield paths, products
    mp.undo()


def _candidates(paths):
    from active_learning.select import _read_candidates

    return _read_candidates(paths)


@pytest.mark.parametrize("strategy", ["margin", "committee", "density", "random", "entropy"])
def test_only_the_training_split_is_chosen_by_strategy(trained_run, strategy, monkeypatch):
    from active_learning import select

    paths, products = trained_run
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    result = select.score(paths, strategy, batch_size=10, diverse=False, eval_share=0.5)
    candidates = _candidates(paths)
    by_split = {c["split"] for c in candidates}
    assert by_split <= {"train", "valid", "test"} and "train" in by_split
    for candidate in candidates:  # the split a candidate claims is its group's real split
        assert split_for(candidate["group"]) == candidate["split"]
    train = [c for c in candidates if c["split"] == "train"]
    evaluation = [c for c in candidates if c["split"] != "train"]
    assert len(train) == 10 * select.SPARE_CANDIDATES
    assert [c["score"] for c in train] == sorted((c["score"] for c in train), reverse=True)
    # valid/test candidates are a random draw: the same whatever the strategy
    assert {c["id"] for c in evaluation} == {c["id"] for c in _random_evaluation(paths)}
    labelled = {p["id"] for p in products if p.get("exclusive_label")}
    assert not labelled & {c["id"] for c in candidates}
    if strategy == "committee":
        assert result["committee"] == 1 + 1 + 3  # the model, the baseline, 3 dropout passes


def test_density_scores_each_product_against_the_whole_pool(trained_run, monkeypatch):
    """margin x the mean cosine similarity to the 10 nearest other pool products, checked
    against a brute-force computation over every unlabelled training product."""
    from active_learning import select
    from trainer import task

    paths, _ = trained_run
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    select.score(paths, "density", batch_size=5, diverse=False, eval_share=0.0)
    model, _ = task.load_trained(paths, storage.read_json(paths.stats_file("train"))["hparams_id"])
    vocabs = task.vocabularies(paths)
    encoder, discriminator = model.get_layer("encoder"), model.get_layer("discriminator")
    ids, vectors, margins = [], [], []
    for chunk_ids, _, unlabelled, inputs in select._stream(paths, "train", vocabs):
        # eagerly, layer by layer: the discriminator's features, L2-normalised
        probabilities = np.asarray(model(inputs, training=False)["exclusive"])
        features = np.asarray(discriminator(encoder(inputs))["features"])[unlabelled]
        vectors.append(features / np.linalg.norm(features, axis=1, keepdims=True))
        margins.append(strategies.margin(probabilities[unlabelled]))
        ids += [i for i, keep in zip(chunk_ids, unlabelled) if keep]
    vectors, margins = np.concatenate(vectors), np.concatenate(margins)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)  # the product itself is not its own neighbour
    nearest = np.sort(similarity, axis=1)[:, -select.NEIGHBOURS:].clip(min=0).mean(axis=1)
    expected = dict(zip(ids, margins * nearest, strict=True))
    train = [c for c in _candidates(paths) if c["split"] == "train"]
    assert len(train) == 5 * select.SPARE_CANDIDATES
    assert [c["id"] for c in train] == sorted(expected, key=expected.get, reverse=True)[:len(train)]
    assert [c["score"] for c in train] == pytest.approx([expected[c["id"]] for c in train],
                                                        rel=1e-4)
    # each candidate keeps its embedding: the eager features above, to the stored 5 decimals
    embedded = dict(zip(ids, vectors, strict=True))
    for candidate in train:
        assert candidate["embedding"] == pytest.approx(embedded[candidate["id"]].tolist(),
                                                       abs=2e-5)


def _random_evaluation(paths):
    from active_learning import select

    select.score(paths, "random", batch_size=10, diverse=False, eval_share=0.5)
    return [c for c in _candidates(paths) if c["split"] != "train"]


def test_the_pool_is_streamed_and_only_the_best_are_held(trained_run, monkeypatch):
    from active_learning import select

    paths, _ = trained_run
    monkeypatch.setattr(select, "CHUNK", 16)
    chunks, largest = [], [0]
    stream, offer = select._stream, select._Best.offer

    def counting_stream(*args):
        for chunk in stream(*args):
            chunks.append(len(chunk[0]))
            yield chunk

    def watched_offer(self, *args):
        offer(self, *args)
        largest[0] = max(largest[0], len(self.heap))

    monkeypatch.setattr(select, "_stream", counting_stream)
    monkeypatch.setattr(select._Best, "offer", watched_offer)
    select.score(paths, "margin", batch_size=5, diverse=False, eval_share=0.2)
    assert max(chunks) <= 16 and sum(chunks) == 400 and len(chunks) >= 400 // 16
    assert largest[0] <= 5 * select.SPARE_CANDIDATES


def test_a_diverse_batch_is_queued_in_the_store_without_touching_a_label(trained_run, settings,
                                                                       monkeypatch):
    from active_learning import queue, select
    from catalog_data import oracle
    from store.client import ProductStore
    from store.load import load_products

    paths, products = trained_run
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    store = ProductStore.from_settings(settings)
    load_products(store, [dict(p) for p in products], recreate=True)
    select.score(paths, "margin", batch_size=8, diverse=True, eval_share=0.25)
    storage.write_json(paths.stats_file("selection_score"), {
        "strategy": "margin", "diverse": True, "batch_size": 8, "eval_share": 0.25,
        "pool_mean_uncertainty": 0.5})
    candidates = _candidates(paths)
    # the best candidate gets a label, another is queued by someone else, before choosing
    best = next(c for c in candidates if c["split"] == "train")
    store.update_partial([(best["id"], {"exclusive_label": "human says"})])
    other = [c for c in candidates if c["split"] == "train"][1]
    queue.queue_requests(store, [{"id": other["id"], "run_id": "earlier", "strategy": "margin",
                                  "score": 1.0, "rank": 1, "split": "train"}])
    chosen = select.choose(paths, store)
    batch = storage.read_json(paths.selection_dir + "batch.json")
    train = [c for c in batch if c["split"] == "train"]
    assert len(train) == 8 and chosen["evaluation"] == 2
    assert len({c["group"] for c in train}) == 8  # one listing per product
    assert best["id"] not in {c["id"] for c in batch} and other["id"] not in {
        c["id"] for c in batch}
    storage.write_json(paths.stats_file("selection_queue"), queue.queue_batch(paths, store))
    queued = storage.read_json(paths.stats_file("selection_queue"))
    assert queued["queued"] == 10
    # a label that arrived meanwhile is never overwritten: queue the same batch again
    store.update_partial([(train[0]["id"], {"exclusive_label": "answered"})])
    again = queue.queue_requests(store, [{"id": c["id"], "rank": c["rank"]} for c in batch])
    assert again[train[0]["id"]] == queue.LABELLED
    assert set(again.values()) == {queue.LABELLED, queue.QUEUED}
    assert store.get(train[0]["id"])["exclusive_label"] == "answered"
    request = store.get(train[1]["id"])["label_request"]
    assert request["run_id"] == paths.run_id and request["strategy"] == "margin+diverse"
    assert store.get(best["id"]).get("label_request") is None
    stats = queue.record_selection(paths, previous_macro_f1=None)
    assert stats["queued"] == 10 and stats["queued_per_split"]["train"] == 8
    assert sum(stats["predicted_class_mix"].values()) == 8
    assert stats["score_quantiles"]["p100"] >= stats["score_quantiles"]["p0"]
    # the oracle answers the open requests (the earlier run's too), best rank first
    assert set(oracle.choose(store, "queue", 3)) <= {c["id"] for c in batch} | {other["id"]}
    assert len(oracle.choose(store, "queue", 100)) == 10  # 10 queued + 1 earlier - 1 answered
