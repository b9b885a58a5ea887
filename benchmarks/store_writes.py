"""How fast the local store (osmem) takes prodcat's versioned writes, and what slows them.

    .venvs/ml/bin/python -m benchmarks.store_writes [--products 10000] [--batches 500,5000]
        [--load-chunks 1000,5000] [--catalog demo|generated] [--catalog-size 100000]

For each load request size and batch size, on a store of its own, the catalogue bulk-loaded
that many products a request (the demo catalogue as ``make demo`` loads it, or the scale
generator's products as the end-to-end benchmark loads them), then
``ProductStore.update_if_newer`` (the updater's write: one ``mget``, then one
bulk request writing back with ``if_seq_no``), that many products a request, the products in
shuffled order, as the updater meets them:

- first writes: the first update of each product after the bulk load;
- second writes: the same products updated again, in the same order;
- writes holding tokens: the same products, in another order (as neighbour sets follow
  predictions), given a neighbour set with 128 image tokens (``image_tokens``), then updated
  once more with a plain prediction.

Prints documents/s per step and setting, each as a ratio to the second writes of the first
setting, and the last setting's rate as a ratio to the first's.
"""
from __future__ import annotations

import argparse
import os
import random
import time

from catalog_data import reviews_catalog
from catalog_data.generator import ScaleGenerator
from catalog_data.taxonomy import Taxonomy
from local_stack.services import free_port, start_store
from shared_config.settings import Settings
from store.client import ProductStore
from store.load import LOAD_CHUNK, load_products, read_jsonl

BATCH = Settings.from_env({}).updater_batch_size  # the updater's default


def prediction(version: int) -> dict:
    return {"prediction_run_id": f"bench-{version}", "prediction_version": version,
            "prediction_path": ["Tops", "Tops > Knits"],
            "prediction": {"exclusive": "Tops > Knits", "confidence": 0.9}}


def neighbours(version: int, rng: random.Random, ids: list[str]) -> dict:
    return {"similar_run_id": f"bench-{version}", "similar_version": version,
            "similar_group": "Tops/Tops > Knits", "similar_level": 2,
            "similar_products": [{"id": rng.choice(ids), "score": 0.9} for _ in range(20)],
            "image_tokens": " ".join(f"d{d}_{rng.randrange(100)}" for d in range(64)
                                     for _ in range(2))}


def timed_writes(store: ProductStore, ids: list[str], fields, version_field: str,
                 batch: int) -> float:
    """Documents/s of versioned writes of ``fields(product_id)`` to ``ids``, ``batch`` a request."""
    started = time.monotonic()
    for start in range(0, len(ids), batch):
        outcome = store.update_if_newer({pid: fields(pid) for pid in ids[start:start + batch]},
                                        version_field=version_field, chunk_size=batch)
        if set(outcome.values()) != {"applied"}:
            raise RuntimeError(f"not every write was applied: {set(outcome.values())}")
    return len(ids) / (time.monotonic() - started)


def measure(products, count: int, batch: int, load_chunk: int) -> dict[str, float]:
    """Every step's documents/s with ``batch`` products a request, on a store of its own
    loaded ``load_chunk`` products a request from ``products()``."""
    server = start_store(free_port())
    try:
        store = ProductStore("opensearch", server.url, "bench-products")
        started = time.monotonic()
        load_products(store, products(), recreate=True, chunk_size=load_chunk)
        print(f"  loaded {load_chunk:,} a request in {time.monotonic() - started:.1f} s",
              flush=True)
        rng = random.Random(0)
        ids = [p["id"] for p in store.iter_products()]
        rng.shuffle(ids)
        ids = ids[:count]
        # (name, fields, version field, in a new order: neighbour sets follow predictions
        # in another order than theirs)
        steps = [
            ("first writes after the bulk load", lambda pid: (1, prediction(1)),
             "prediction_version", False),
            ("second writes", lambda pid: (2, prediction(2)), "prediction_version", False),
            ("a neighbour set with 128 tokens", lambda pid: (3, neighbours(3, rng, ids)),
             "similar_version", True),
            ("a prediction on a product holding tokens", lambda pid: (4, prediction(4)),
             "prediction_version", False),
        ]
        rates = {}
        for name, fields, version_field, reorder in steps:
            if reorder:
                rng.shuffle(ids)
            rates[name] = timed_writes(store, ids, fields, version_field, batch)
            print(f"  {batch:,} a request: {name}: {rates[name]:,.0f} documents/s", flush=True)
        return rates
    finally:
        server.close()


def sizes(text: str, option: str, parser) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"{option} {text!r}: give positive sizes, e.g. 500,5000")
    return values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_writes",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=10000,
                        help="products written in each step (default 10000)")
    parser.add_argument("--batches", default=f"500,{BATCH}",
                        help="products a write request, comma-separated (default "
                             f"500,{BATCH}: the updater's old batch and its default)")
    parser.add_argument("--load-chunks", default=str(LOAD_CHUNK),
                        help="products a load request, comma-separated (default "
                             f"{LOAD_CHUNK}, the loader's; 1000 was its old one)")
    parser.add_argument("--catalog", choices=("demo", "generated"), default="demo",
                        help="the demo catalogue (23,486 products) or the scale generator's")
    parser.add_argument("--catalog-size", type=int, default=100000,
                        help="products generated with --catalog generated (default 100000)")
    args = parser.parse_args(argv)
    batches = sizes(args.batches, "--batches", parser)
    loads = sizes(args.load_chunks, "--load-chunks", parser)
    if args.catalog == "demo":
        directory = reviews_catalog.default_dir()
        if not reviews_catalog.is_current(directory):
            reviews_catalog.build(directory)
        demo = list(read_jsonl(str(directory / "catalog.jsonl.gz")))
        size = len(demo)

        def products():
            return iter(demo)
    else:
        size = args.catalog_size

        def products():
            return ScaleGenerator(Taxonomy.shopify(), seed=0).products(size)
    print(f"osmem: {size:,} {args.catalog} products bulk-loaded per store; "
          f"{min(args.products, size):,} written per step", flush=True)
    settings = [(load, batch) for load in loads for batch in batches]
    names = {s: f"load {s[0]:,}, write {s[1]:,}" for s in settings}
    rates = {}
    for setting in settings:
        print(f"{names[setting]} a request:", flush=True)
        rates[setting] = measure(products, args.products, setting[1], setting[0])
    first, last = settings[0], settings[-1]
    reference = rates[first]["second writes"]
    print(f"{'documents/s':<44}" + "".join(f"{names[s]:>26}" for s in settings))
    for name in rates[first]:
        print(f"{name:<44}" + "".join(f"{rates[s][name]:>26,.0f}" for s in settings))
    print("ratios to the second writes of the first setting, and (last column) of the "
          "last setting to the first:")
    for name in rates[first]:
        cells = "".join(f"{rates[s][name] / reference:>25.2f}x" for s in settings)
        print(f"{name:<44}{cells}{rates[last][name] / rates[first][name]:>10.1f}x")
    os._exit(0)


if __name__ == "__main__":
    main()
