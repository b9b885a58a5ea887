"""The trainer's embed verb on a real preprocessed run: shards, paths, then neighbours."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from beam_pipelines import images
from beam_pipelines.preprocess import run
from catalog_data import fashion_mnist
from shared_config import storage
from shared_config.paths import RunPaths
from shared_config.runs import create_run
from similarity import embeddings
from similarity import neighbours as nb
from store import demo_catalog
from tests.ml.test_similarity import read_lines
from trainer import embed as embed_task
from trainer.controller import main as controller_main


def test_embed_streams_every_product_with_an_image_then_neighbours_follow(tmp_path, monkeypatch):
    pictures, classes = fashion_mnist.load("t10k")
    products = list(demo_catalog.generate(300, seed=3, exclusive_fraction=0.5))
    categories = sorted({p["_true_category"] for p in products})
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for number, product in enumerate(products):  # each category looks like one garment type
        garment = categories.index(product.pop("_true_category")) % 10
        picture = np.flatnonzero(classes == garment)[number]
        product["image"] = str(fashion_mnist.save_png(pictures[picture],
                                                      image_dir / f"{number}.png"))
    products[7]["image"] = ""  # no image: no vector, counted
    paths = RunPaths.for_run("job", str(tmp_path / "prefix"))
    storage.makedirs(paths.dump_dir)
    with gzip.open(paths.dump_dir + "part-00000.jsonl.gz", "wt") as dump:
        dump.writelines(json.dumps(p) + "\n" for p in products)
    run(paths, [], 1.0, images.FetchPolicy(local_roots=(str(image_dir),)))
    monkeypatch.setenv("PRODCAT_PREFIX", paths.prefix)
    create_run(paths, {})
    controller_main(["train_and_predict", "--run-id", "job", "--epochs", "1"])
    monkeypatch.setattr(embed_task, "EMBEDDINGS_PER_SHARD", 64)
    controller_main(["embed", "--run-id", "job", "--embed-epochs", "3"])

    summary = storage.read_json(paths.stats_file("embed"))
    assert summary["embedded"] == 299 and summary["no_image"] == 1
    assert summary["shards"] == 5 and summary["labels"] in ("exclusive", "rule_based")
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "rb") as raw, \
            gzip.open(raw, "rt") as lines:
        predicted = {p["id"]: p["exclusive"]["path"] for p in map(json.loads, lines)}
    seen = set()
    for shard in embeddings.shards(paths.embeddings_dir):
        ids, vectors, paths_, _ = embeddings.read_shard(shard)
        assert len(ids) <= 64
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        assert all(predicted[i] == p for i, p in zip(ids, paths_, strict=True))
        seen |= set(ids.tolist())
    assert seen == {p["id"] for p in products} - {products[7]["id"]}

    result = nb.neighbours(paths, k=5, level=1)
    assert result["products"] == 299
    for line in read_lines(paths.similar_dir):
        assert all(predicted[n["id"]][:1] == predicted[line["id"]][:1]
                   for n in line["similar_products"])


def test_embed_needs_an_image_feature_and_two_classes(tmp_path, monkeypatch):
    from shared_config.features import load

    config = load()
    without = type(config)(**{**config.__dict__, "features": tuple(
        f for f in config.features if f.kind != "image")})
    with pytest.raises(ValueError, match="no image feature"):
        embed_task.image_feature(without)
