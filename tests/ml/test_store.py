import gzip
import json

import pytest

from shared_config import storage
from shared_config.paths import RunPaths
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
