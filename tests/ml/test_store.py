import collections
import gzip
import json

import pytest

from shared_config import storage
from shared_config.paths import RunPaths
from shared_config.splits import split_for
from store import demo_catalog
from store.client import ProductStore, StoreError
from store.dump import dump_products
from store.load import BadProduct, load_products, read_jsonl


@pytest.fixture
def store(settings):
    return ProductStore.from_settings(settings)


def test_dump_pages_through_every_product_once_into_shards(store, settings):
    load_products(store, demo_catalog.generate(230), recreate=True)
    paths = RunPaths.for_run("dump-test")
    result = dump_products(store, paths, page_size=40, shard_size=100)
    assert result["products"] == 230 and result["shards"] == 3
    shards = storage.glob(paths.dump_dir + "part-*.jsonl.gz")
    assert len(shards) == 3
    ids = []
    for shard in shards:
        with gzip.open(shard, "rt") as lines:
            ids += [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == sorted(f"demo-{i:07d}" for i in range(230))
    # counted per split the way the preprocessing job splits (no group id: by listing id)
    expected = collections.Counter(split_for(f"demo-{i:07d}") for i in range(230))
    assert result["products_per_split"] == {s: expected[s] for s in ("train", "valid", "test")}


def test_a_whole_index_read_in_either_order_returns_every_product_once(store):
    # indexed out of id order: the id order and the store's own order differ
    products = list(demo_catalog.generate(95))
    load_products(store, products[50:] + products[:50], recreate=True)
    by_id = [p["id"] for p in store.iter_products(page_size=20, order="id")]
    assert by_id == sorted(p["id"] for p in products)
    by_index = [p["id"] for p in store.iter_products(page_size=20, order="index")]
    assert sorted(by_index) == by_id and len(set(by_index)) == 95
    with pytest.raises(ValueError, match="order"):
        next(store.iter_products(order="random"))


def test_hidden_ground_truth_stays_out_of_the_store(store, tmp_path):
    truth = tmp_path / "truth.jsonl"
    load_products(store, demo_catalog.generate(20), recreate=True, ground_truth=str(truth))
    product = store.get("demo-0000003")
    assert "_true_category" not in product
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    assert len(rows) == 20 and all(r["_true_category"] in demo_catalog.CATEGORY_TREE for r in rows)


def test_dumping_an_empty_index_is_an_error(store):
    store.create_index(recreate=True)
    with pytest.raises(RuntimeError, match="no products"):
        dump_products(store, RunPaths.for_run("empty"))


def test_partial_update_reports_products_the_store_rejects(store):
    load_products(store, demo_catalog.generate(3), recreate=True)
    rejected = store.update_partial([("demo-0000001", {"prediction_run_id": "r"}),
                                     ("no-such-product", {"prediction_run_id": "r"})])
    assert list(rejected) == ["no-such-product"] and "missing" in rejected["no-such-product"]
    store.refresh()
    assert store.get("demo-0000001")["prediction_run_id"] == "r"


def test_indexing_a_rejected_product_raises(store):
    store.create_index(recreate=True)
    with pytest.raises(StoreError):
        store.index_products([{"id": "x", "price": "not a number"}])


def test_reading_a_catalogue_file_names_the_bad_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a"}\n{"title": "no id"}\n')
    with pytest.raises(BadProduct, match=":2:"):
        list(read_jsonl(str(path)))


def test_rule_labels_are_positive_only_and_include_ancestors():
    assert demo_catalog.rule_labels("Acme classic jeans") == [
        "clothing", "clothing > bottoms", "clothing > bottoms > jeans"]
    assert demo_catalog.rule_labels("Acme slim chinos") == []  # a synonym the rules miss


def test_demo_catalogue_is_deterministic():
    assert list(demo_catalog.generate(50, seed=3)) == list(demo_catalog.generate(50, seed=3))
    assert list(demo_catalog.generate(50, seed=3)) != list(demo_catalog.generate(50, seed=4))


def test_versioned_updates_keep_the_newest_run_and_apply_a_repeat_once(store):
    from store.client import ALREADY_APPLIED, APPLIED, SUPERSEDED

    load_products(store, demo_catalog.generate(3), recreate=True)
    first = store.update_if_newer({
        "demo-0000000": (20, {"prediction_version": 20, "prediction_run_id": "new"}),
        "demo-0000001": (10, {"prediction_version": 10, "prediction_run_id": "old"}),
        "ghost": (10, {"prediction_version": 10})})
    assert first["demo-0000000"] == first["demo-0000001"] == APPLIED
    assert first["ghost"].startswith("rejected: 404")
    again = store.update_if_newer({
        "demo-0000000": (10, {"prediction_version": 10, "prediction_run_id": "old"}),
        "demo-0000001": (10, {"prediction_version": 10, "prediction_run_id": "old"})})
    assert again == {"demo-0000000": SUPERSEDED, "demo-0000001": ALREADY_APPLIED}
    newer = store.update_if_newer({"demo-0000001": (30, {"prediction_version": 30,
                                                         "prediction_run_id": "newest"})})
    assert newer == {"demo-0000001": APPLIED}
    store.refresh()
    assert store.get("demo-0000000")["prediction_run_id"] == "new"
    assert store.get("demo-0000001")["prediction_run_id"] == "newest"
    versions = {d["_id"]: d["_version"] for d in store.client.mget(
        index=store.index, body={"ids": ["demo-0000000", "demo-0000001"]})["docs"]}
    assert versions == {"demo-0000000": 2, "demo-0000001": 3}  # one write per applied update


def test_run_statistics_go_to_their_own_index(settings):
    from shared_config.runs import create_run, record_stats
    from store.run_stats import index_run, runs_store

    paths = RunPaths.for_run("stats-run", settings.prefix)
    create_run(paths, {"epochs": 1})
    per_class = {"Dresses > Dresses": {"precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 2}}
    stages = {
        "dump": {"products": 10}, "preprocess": {"quarantined": 1, "examples": {
            "catalog_train": 7, "catalog_valid": 1, "catalog_test": 1, "exclusive_train": 3}},
        "train": {"hparams_id": "ssl_gan-1", "model_type": "ssl_gan"},
        "evaluate_valid": {"objectives": {
            "exclusive": {"accuracy": 0.5, "macro_f1": 0.4, "per_class": per_class},
            "rule_based": {"micro_f1": 0.7, "macro_f1": 0.6, "per_class": {}}}},
        "baseline_train": {"hparams_id": "dnn-1"},
        "baseline_evaluate_valid": {"objectives": {
            "exclusive": {"accuracy": 0.3, "macro_f1": 0.2, "per_class": per_class}}},
        "predict": {"predictions": 9}, "publish": {"published": 9}}
    for stage, result in stages.items():
        storage.write_json(paths.stats_file(stage), result)
    record_stats(paths)
    result = index_run(paths, settings)
    assert result["per_class_rows"] == 2
    runs = runs_store(settings)
    runs.refresh()
    document = runs.get("stats-run")
    assert document["counts"] == {"dumped": 10, "quarantined": 1, "examples": 9, "predicted": 9,
                                  "published": 9}
    assert document["metrics"] == {
        "exclusive_accuracy": 0.5, "exclusive_macro_f1": 0.4, "rule_based_micro_f1": 0.7,
        "rule_based_macro_f1": 0.6, "baseline_exclusive_accuracy": 0.3,
        "baseline_exclusive_macro_f1": 0.2}
    assert document["model"] == "ssl_gan-1" and document["baseline_model"] == "dnn-1"
    assert {(row["model"], row["category"]) for row in document["per_class"]} == {
        ("model", "Dresses > Dresses"), ("baseline", "Dresses > Dresses")}
    index_run(paths, settings)  # again: replaced, not added
    runs.refresh()
    assert runs.count({"term": {"run_id": "stats-run"}}) == 1


def test_a_product_with_a_lone_surrogate_is_loaded_dumped_and_read_back(store, settings):
    odd = {"id": "odd-1", "title": "\udcff half a pair", "brand": "A\ud800", "group_id": "\udfff"}
    load_products(store, [odd, {"id": "fine", "title": "ok"}], recreate=True)
    assert store.get("odd-1")["title"] == odd["title"]  # the store keeps it as it came
    result = dump_products(store, RunPaths.for_run("dump-odd"), page_size=1)
    assert result["products"] == 2
    [shard] = storage.glob(RunPaths.for_run("dump-odd").dump_dir + "part-*.jsonl.gz")
    with gzip.open(shard, "rt", encoding="utf-8") as lines:
        dumped = {p["id"]: p for p in map(json.loads, lines)}
    assert dumped["odd-1"] == odd


BAD_LINES = [
    b'{"id": "big", "price": ' + b"9" * 5000 + b"}",
    b"{not json",
    b'{"id": "latin1", "title": "caf\xe9"}',
    b'["a", "list"]',
    b'{"title": "no id"}',
    b'{"id": ""}',
    b'{"id": "' + b"x" * 600 + b'"}',
    b"[" * 50_000,
    b'{"id": "typed", "price": "not a number"}',  # the store's mapping refuses it
]


def test_the_loader_loads_every_good_line_and_writes_each_reject_with_its_reason(
        store, settings, tmp_path, capsys):
    from store.load import main as load_main

    good = [json.dumps({"id": f"g{i}", "title": "fine"}).encode() for i in range(200)]
    path = tmp_path / "feed.jsonl.gz"
    with gzip.open(path, "wb") as feed:
        feed.write(b"\n".join(good[:100] + BAD_LINES + good[100:]) + b"\n")
    load_main(["--jsonl", str(path), "--recreate"])
    assert store.count() == 200
    rejects = [json.loads(line) for line in open(f"{path}.rejects.jsonl", encoding="ascii")]
    assert len(rejects) == len(BAD_LINES)
    assert all(r["reason"] and r["record"] for r in rejects)
    by_line = {r["where"].rsplit(":", 1)[1]: r["reason"] for r in rejects if ":" in r["where"]}
    assert by_line["101"].startswith("not JSON") and "4300" in by_line["101"]
    assert by_line["103"].startswith("not UTF-8")
    assert any("refused" in r["reason"] and "typed" in r["where"] for r in rejects)
    # over the allowed share of rejects: the good lines are still loaded, then it fails
    with pytest.raises(SystemExit) as exit_info:
        load_main(["--jsonl", str(path), "--recreate", "--max-bad-ratio", "0.01"])
    assert exit_info.value.code == 1 and "rejected" in capsys.readouterr().err
    assert store.count() == 200
