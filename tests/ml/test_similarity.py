"""Visual similarity: tokens, per-group neighbours over shards, and neighbours through the
real broker into the real store."""
from __future__ import annotations

import gzip
import json
import tracemalloc

import numpy as np
import pytest

from broker import messages
from broker.publish import publish
from broker.updater import Updater
from shared_config import storage
from shared_config.paths import RunPaths
from shared_config.runs import create_run
from similarity import embeddings
from similarity import neighbours as nb
from similarity.tokens import Tokeniser, bm25_idf, shared_token_scores
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products


def unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_embeddings(paths: RunPaths, ids, vectors, categories, per_shard: int,
                     tokeniser_rows: int = 1000, products=None) -> None:
    create_run(paths, {})
    for number, start in enumerate(range(0, len(ids), per_shard)):
        end = start + per_shard
        embeddings.write_shard(paths.embeddings_dir, number, ids[start:end], vectors[start:end],
                               categories[start:end],
                               None if products is None else products[start:end])
    storage.write_json(paths.embeddings_dir + embeddings.TOKENISER_FILE,
                       Tokeniser.fit(vectors[:tokeniser_rows]).to_dict())


def read_lines(directory: str) -> list[dict]:
    lines = []
    for path in storage.glob(directory + "part-*.jsonl.gz"):
        with storage.open_file(path, "rb") as raw, gzip.open(raw, "rt") as stream:
            lines += [json.loads(line) for line in stream]
    return lines


def test_tokenisation_is_deterministic_and_follows_the_two_precisions():
    vectors = unit(200)
    tokeniser = Tokeniser.fit(vectors)
    first = tokeniser.tokens(vectors)
    assert first == tokeniser.tokens(vectors.copy())
    assert Tokeniser.from_dict(json.loads(json.dumps(tokeniser.to_dict()))).tokens(vectors) == first
    assert all(len(t.split()) == 2 * 16 for t in first)
    # the mean falls in the middle interval; three spreads above it, near the top
    middle = np.array([tokeniser.mean]) + np.array([[0.0] * 15 + [3 * tokeniser.std[15]]])
    tokens = tokeniser.tokens(middle)[0].split()
    assert tokens[:2] == ["d0_5", "d0_50"] and tokens[-2:] == ["d15_9", "d15_99"]
    # the 0/1 matrix has exactly the tokens of the strings
    matrix = tokeniser.token_matrix(vectors[:3])
    assert matrix.sum() == 3 * 32 and matrix.shape == (3, 16 * 110)
    for bad in ({"mean": [0.0], "std": [0.0]}, {"mean": [0.0, 1.0], "std": [1.0]},
                {"mean": ["x"], "std": [1.0]}, {}):
        with pytest.raises(ValueError):
            Tokeniser.from_dict(bad)


def test_shared_token_scores_rank_the_closer_vector_first():
    vectors = unit(300, seed=1)
    tokeniser = Tokeniser.fit(vectors)
    near = vectors[0] + 0.05 * unit(1, seed=2)[0]
    tokens = tokeniser.token_matrix(np.vstack([vectors, near / np.linalg.norm(near)]))
    scores = shared_token_scores(tokens[-1:], tokens[:-1], bm25_idf(tokens))[0]
    assert scores.argmax() == 0


@pytest.mark.parametrize("index", ["flat", "hnsw", "ivfpq"])
def test_neighbours_stay_in_their_group_and_never_list_the_product_itself(tmp_path, index):
    paths = RunPaths.for_run("sim", str(tmp_path / "prefix"))
    groups = [["A", "A1", "x"], ["A", "A2"], ["B", "B1"], ["B"], []]
    ids = [f"p{i:04d}" for i in range(2500)]
    categories = [groups[i % len(groups)] if i < 2499 else ["C", "C1"] for i in range(2500)]
    vectors = unit(2500)
    write_embeddings(paths, ids, vectors, categories, per_shard=400)
    result = nb.neighbours(paths, k=7, level=2, index=index)
    lines = {line["id"]: line for line in read_lines(paths.similar_dir)}
    assert len(lines) == 2500 == result["products"]
    group = {pid: nb.group_of(c, 2) for pid, c in zip(ids, categories, strict=True)}
    assert group["p0003"] == "B" and group["p0004"] == nb.NO_PREDICTION
    assert result["groups"] == 6 and result["products_without_prediction"] == 499
    for pid, line in lines.items():
        found = [n["id"] for n in line["similar_products"]]
        assert pid not in found and len(set(found)) == len(found)
        assert {group[f] for f in found} <= {group[pid]}
        assert line["similar_group"] == group[pid] and line["version"] == result["version"]
        scores = [n["score"] for n in line["similar_products"]]
        if index != "ivfpq":  # PQ scores are approximate, so their order is the index's
            assert scores == sorted(scores, reverse=True)
    assert lines["p2499"]["similar_products"] == []  # alone in its group
    assert all(len(lines[p]["similar_products"]) == 7 for p in ids[:2499])
    if index == "flat":  # exact: the true 7 nearest within the group
        members = [i for i in range(2500) if group[ids[i]] == group["p0000"]]
        scores = vectors[members] @ vectors[0]
        expected = [ids[members[j]] for j in np.argsort(-scores)[1:8]]
        assert [n["id"] for n in lines["p0000"]["similar_products"]] == expected
    else:
        assert result["sampled_recall_at_k"]["mean"] > (0.9 if index == "hnsw" else 0.3)


def test_a_global_search_and_a_second_set_with_a_newer_version(tmp_path):
    paths = RunPaths.for_run("sim", str(tmp_path / "prefix"))
    ids = [f"p{i}" for i in range(50)]
    write_embeddings(paths, ids, unit(50), [["A", f"A{i % 5}"] for i in range(50)], 20)
    first = nb.neighbours(paths, k=49, level=0)
    lines = read_lines(paths.similar_dir)
    assert first["groups"] == 1 and all(len(line["similar_products"]) == 49 for line in lines)
    again = nb.neighbours(paths, k=3, level=1, with_vectors=True)
    assert again["version"] == first["version"] + 1
    lines = read_lines(paths.similar_dir)
    assert len(lines) == 50 and len(lines[0]["image_embedding"]) == 16
    for bad in ({"k": 0}, {"k": 1001}, {"level": -1}, {"index": "lsh"}):
        with pytest.raises(ValueError):
            nb.neighbours(paths, **bad)
    with pytest.raises(FileNotFoundError, match="embed"):
        nb.neighbours(RunPaths.for_run("none", str(tmp_path / "prefix")))


def test_other_listings_of_the_same_product_are_not_neighbours(tmp_path):
    paths = RunPaths.for_run("sim", str(tmp_path / "prefix"))
    ids = [f"p{i}" for i in range(300)]
    products = [f"g{i // 3}" for i in range(300)]  # three listings per product, one picture
    vectors = np.repeat(unit(100), 3, axis=0)
    write_embeddings(paths, ids, vectors, [["A"]] * 300, 100, products=products)
    nb.neighbours(paths, k=5, level=1)
    product_of = dict(zip(ids, products, strict=True))
    for line in read_lines(paths.similar_dir):
        found = [n["id"] for n in line["similar_products"]]
        assert len(found) == 5 and all(product_of[f] != product_of[line["id"]] for f in found)
        assert all(int(f[1:]) % 3 == 0 for f in found)  # one listing per product: its first
        assert len({product_of[f] for f in found}) == 5
        # the tokens go on the listing indexed, so a token search finds each product once
        assert bool(line["image_tokens"]) == (int(line["id"][1:]) % 3 == 0)
    nb.neighbours(paths, k=5, level=1, same_product=True)
    lines = read_lines(paths.similar_dir)
    first = next(line for line in lines if line["id"] == "p0")
    assert {n["id"] for n in first["similar_products"][:2]} == {"p1", "p2"}  # the same picture
    assert all(line["image_tokens"] for line in lines)  # every listing indexed, tokens on each


def _peak_bytes(tmp_path, name: str, groups: int) -> int:
    paths = RunPaths.for_run(name, str(tmp_path / "prefix"))
    n = groups * 600
    write_embeddings(paths, [f"p{i}" for i in range(n)], unit(n, dim=64),
                     [[f"G{i % groups}", "x"] for i in range(n)], per_shard=600)
    tracemalloc.start()
    nb.neighbours(paths, k=10, level=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_follows_the_largest_group_not_the_catalogue(tmp_path):
    _peak_bytes(tmp_path, "warm-up", 1)  # imports and first-use caches are not the catalogue's
    small, large = _peak_bytes(tmp_path, "small", 3), _peak_bytes(tmp_path, "large", 15)
    assert large < 1.5 * small, (small, large)  # 5x the products, groups and shards alike


def _neighbour_line(product_id: str, run_id: str, version: int, found: list[str]) -> dict:
    return {"id": product_id, "run_id": run_id, "version": version, "similar_group": "g",
            "similar_level": 1, "image_tokens": "d0_1 d0_12",
            "similar_products": [{"id": f, "score": 0.5} for f in found]}


def test_bad_neighbour_lines_are_refused_with_a_reason():
    good = _neighbour_line("p1", "r", 5, ["p2"])
    assert messages.to_update(json.dumps(good).encode()).version_field == "similar_version"
    for change, reason in (({"similar_products": [{"id": "p1", "score": 1}]}, "other products"),
                           ({"similar_products": [{"id": "p2", "score": "NaN"}]}, "finite"),
                           ({"similar_products": [{"id": "p2"}]}, "id, score"),
                           ({"similar_products": "p2"}, "list"),
                           ({"image_embedding": [1e400]}, "not JSON|finite"),
                           ({"similar_level": "2"}, "similar_level")):
        line = json.dumps({**good, **change}).replace("Infinity", "1e400").encode()
        with pytest.raises(messages.BadMessage, match=reason):
            messages.to_update(line)


def test_neighbours_are_applied_exactly_once_through_the_broker(broker_settings, tmp_path):
    store = ProductStore.from_settings(broker_settings)
    load_products(store, demo_catalog.generate(60), recreate=True)
    ids = sorted(p["id"] for p in store.iter_products())
    newer, older = (RunPaths.for_run(r, broker_settings.prefix) for r in ("run-new", "run-old"))
    for paths, found in ((newer, ids[1:3]), (older, ids[3:5])):
        paths_lines = [_neighbour_line(pid, paths.run_id, 2000 if paths is newer else 1000,
                                       [f for f in found if f != pid]) for pid in ids[:40]]
        with storage.open_file(paths.similar_dir + "part-00000.jsonl.gz", "wb") as raw, \
                gzip.open(raw, "wt") as out:
            out.writelines(json.dumps(line) + "\n" for line in paths_lines)
    store.update_if_newer({ids[0]: (7, {"prediction_version": 7, "prediction_path": ["A"]})})

    publish(newer, broker_settings, workers=2, per_message=7, what="similar")
    publish(newer, broker_settings, workers=1, per_message=5, what="similar", restart=True)
    publish(older, broker_settings, workers=1, per_message=10, what="similar")
    counts = Updater(store, broker_settings).run(exit_when_idle=1.0)
    assert counts["applied"] == 40 and counts["already_applied"] == 40
    assert counts["superseded"] == 40 and counts["dead_lettered"] == 0
    store.refresh()
    documents = store.sources(ids[:40])
    assert all(doc["similar_run_id"] == "run-new" and doc["similar_version"] == 2000
               for doc in documents.values())
    assert [n["id"] for n in documents[ids[0]]["similar_products"]] == ids[1:3]
    # a prediction and a neighbour set live side by side, each with its own version
    assert documents[ids[0]]["prediction_version"] == 7
    assert store.count({"match": {"image_tokens": "d0_12"}}) == 40
