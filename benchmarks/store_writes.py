"""How fast the local store (osmem) takes prodcat's versioned writes, and what slows them.

    .venvs/ml/bin/python -m benchmarks.store_writes [--products 6000]

On a store of its own, the demo catalogue bulk-loaded as ``make demo`` loads it, then
``ProductStore.update_if_newer`` (the updater's write: read, then write back with
``if_seq_no``) in batches of 500, the products in shuffled order, as the updater meets them:

- first writes: the first update of each product after the bulk load;
- second writes: the same products updated again;
- writes holding tokens: the same products given a neighbour set with 128 image tokens
  (``image_tokens``), then updated once more with a plain prediction.

Prints documents/s per step, and each as a ratio to the second writes of the same run.
"""
from __future__ import annotations

import argparse
import os
import random
import time

from catalog_data import reviews_catalog
from local_stack.services import free_port, start_store
from store.client import ProductStore
from store.load import load_products, read_jsonl

BATCH = 500


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


def timed_writes(store: ProductStore, ids: list[str], fields, version_field: str) -> float:
    """Documents/s of versioned writes of ``fields(product_id)`` to ``ids``."""
    started = time.monotonic()
    for start in range(0, len(ids), BATCH):
        outcome = store.update_if_newer({pid: fields(pid) for pid in ids[start:start + BATCH]},
                                        version_field=version_field)
        if set(outcome.values()) != {"applied"}:
            raise RuntimeError(f"not every write was applied: {set(outcome.values())}")
    return len(ids) / (time.monotonic() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_writes",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=6000,
                        help="products written in each step (default 6000)")
    args = parser.parse_args(argv)
    directory = reviews_catalog.default_dir()
    if not reviews_catalog.is_current(directory):
        reviews_catalog.build(directory)
    server = start_store(free_port())
    try:
        store = ProductStore("opensearch", server.url, "bench-products")
        loaded = load_products(store, read_jsonl(str(directory / "catalog.jsonl.gz")),
                               recreate=True)["loaded"]
        rng = random.Random(0)
        ids = [p["id"] for p in store.iter_products()]
        rng.shuffle(ids)
        ids = ids[:args.products]
        print(f"osmem {server.version}: {loaded:,} demo products bulk-loaded; "
              f"{len(ids):,} written per step, batches of {BATCH}", flush=True)
        steps = [
            ("first writes after the bulk load", lambda pid: (1, prediction(1)),
             "prediction_version"),
            ("second writes", lambda pid: (2, prediction(2)), "prediction_version"),
            ("a neighbour set with 128 tokens", lambda pid: (3, neighbours(3, rng, ids)),
             "similar_version"),
            ("a prediction on a product holding tokens", lambda pid: (4, prediction(4)),
             "prediction_version"),
        ]
        rates = {}
        for name, fields, version_field in steps:
            rates[name] = timed_writes(store, ids, fields, version_field)
        reference = rates["second writes"]
        print(f"{'step':<44}{'documents/s':>12}{'/ second writes':>17}")
        for name, rate in rates.items():
            print(f"{name:<44}{rate:>12,.0f}{rate / reference:>16.2f}x")
    finally:
        server.close()
    os._exit(0)


if __name__ == "__main__":
    main()
