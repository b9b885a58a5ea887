"""Load a catalogue into the product store (bulk, with progress).

``python -m store.load --demo 3000 [--seed 7] [--recreate]`` generates the demo catalogue;
``python -m store.load --jsonl products.jsonl.gz`` loads products from a file.
Hidden fields (names starting with ``_``, such as the true category) never reach
the store; ``--ground-truth FILE`` keeps them in a JSON-lines file instead.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
from collections.abc import Iterable, Iterator

from shared_config.cli import emit_result, setup_logging
from store import demo_catalog
from store.client import ProductStore

log = logging.getLogger("prodcat.load")


class BadProduct(ValueError):
    """A product that cannot be loaded (no id, not an object)."""


def read_jsonl(path: str) -> Iterator[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                product = json.loads(line)
            except json.JSONDecodeError as err:
                raise BadProduct(f"{path}:{line_number}: not JSON: {err}") from None
            if not isinstance(product, dict) or not str(product.get("id") or "").strip():
                raise BadProduct(f"{path}:{line_number}: a product needs a non-empty 'id'")
            yield product


def load_products(store: ProductStore, products: Iterable[dict], recreate: bool = False,
                  ground_truth: str | None = None, chunk_size: int = 1000) -> dict:
    store.create_index(recreate=recreate)
    truth = open(ground_truth, "w", encoding="utf-8") if ground_truth else None
    loaded = 0
    try:
        iterator = iter(products)
        while chunk := list(itertools.islice(iterator, chunk_size)):
            visible = []
            for product in chunk:
                hidden = {k: v for k, v in product.items() if k.startswith("_")}
                if truth and hidden:
                    truth.write(json.dumps({"id": product["id"], **hidden}) + "\n")
                visible.append({k: v for k, v in product.items() if not k.startswith("_")})
            loaded += store.index_products(visible, chunk_size=chunk_size)
            log.info("loaded %d products", loaded)
    finally:
        if truth:
            truth.close()
    store.refresh()
    return {"loaded": loaded, "index": store.index, "in_store": store.count()}


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m store.load", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", type=int, metavar="N", help="generate N demo products")
    source.add_argument("--jsonl", help="a JSON-lines file (optionally .gz) of products")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--recreate", action="store_true", help="drop the index first")
    parser.add_argument("--ground-truth", help="write hidden fields to this JSON-lines file")
    args = parser.parse_args(argv)
    if args.demo is not None:
        products = demo_catalog.generate(args.demo, seed=args.seed)
    else:
        products = read_jsonl(args.jsonl)
    try:
        result = load_products(ProductStore.from_settings(), products, args.recreate,
                               args.ground_truth)
    except BadProduct as err:
        parser.exit(2, f"error: {err} (nothing after it was loaded)\n")
    emit_result(result)


if __name__ == "__main__":
    main()
