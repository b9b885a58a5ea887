"""The labelling oracle: stands in for the labelling team in demos and benchmarks.

Given a strategy that picks products (``random``; ``uncertainty``: the lowest
exclusive-prediction score; ``queue``: the labelling queue active learning wrote,
``label_request``, best rank first), it reveals their true exclusive category from the
ground truth and writes ``exclusive_label`` and ``label_source`` into the store,
as a labelling UI would. Budgets are explicit: ``--budget 2%`` of the catalogue
or ``--budget 500`` products.

``python -m catalog_data.oracle --budget 2% --strategy random``
"""
from __future__ import annotations

import argparse
import gzip
import heapq
import json
import logging
import random
from pathlib import Path

from shared_config import features
from shared_config.cli import emit_result, setup_logging
from shared_config.paths import SPLITS
from shared_config.splits import split_of
from store.client import ProductStore

log = logging.getLogger("prodcat.oracle")
STRATEGIES = ("random", "uncertainty", "queue")


def parse_budget(text: str, catalogue_size: int) -> int:
    """``"2%"`` of the catalogue, or a count; at least 1, at most the catalogue."""
    try:
        count = (round(float(text[:-1]) / 100 * catalogue_size) if text.endswith("%")
                 else int(text))
    except ValueError:
        raise ValueError(f"budget {text!r}: use a percentage like 2% or a count like 500") from None
    if count < 1 or (text.endswith("%") and not 0 < float(text[:-1]) <= 100):
        raise ValueError(f"budget {text!r} labels no product")
    return min(count, catalogue_size)


def choose(store: ProductStore, strategy: str, count: int, seed: int = 0) -> list[str]:
    """Ids of ``count`` unlabelled products, in one streaming pass (memory ~ count)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: use one of {STRATEGIES}")
    rng = random.Random(seed)
    chosen: list[tuple[float, str]] = []  # a heap of the `count` best keys seen
    for product in store.iter_products():
        if product.get("exclusive_label"):
            continue
        if strategy == "random":
            key = rng.random()
        elif strategy == "queue":
            request = product.get("label_request")
            if not isinstance(request, dict):
                continue
            rank = request.get("rank")
            key = -float(rank) if isinstance(rank, (int, float)) else -1e12
        else:
            score = ((product.get("prediction") or {}).get("exclusive") or {}).get("score")
            key = -score if isinstance(score, (int, float)) else -1.0 - rng.random()
        item = (key, product["id"])
        if len(chosen) < count:
            heapq.heappush(chosen, item)
        elif item > chosen[0]:
            heapq.heapreplace(chosen, item)
    return sorted(pid for _, pid in chosen)


def reveal(store: ProductStore, ids: list[str], ground_truth: Path, exclusive: set[str],
           source: str) -> dict:
    """Write the true exclusive category of ``ids``; report the ones that have none."""
    wanted = set(ids)
    updates, without = [], 0
    per_split = dict.fromkeys(SPLITS, 0)  # where the labels land: train, or evaluation
    group_field = features.load().group_field
    with gzip.open(ground_truth, "rt", encoding="utf-8") as rows:
        for line in rows:
            row = json.loads(line)
            if row["id"] not in wanted:
                continue
            if row["category"] in exclusive:
                updates.append((row["id"], {"exclusive_label": row["category"],
                                            "label_source": source}))
                per_split[split_of(row, group_field)] += 1
            else:
                without += 1  # unknown or non-exclusive: the labeller says "none of these"
    rejected = store.update_partial(updates)
    if rejected:
        raise RuntimeError(f"the store rejected {len(rejected)} labels: {list(rejected.items())[:3]}")
    store.refresh()
    missing = len(wanted) - len(updates) - without
    return {"requested": len(ids), "labelled": len(updates), "labelled_per_split": per_split,
            "no_exclusive_category": without,
            "not_in_ground_truth": missing, "label_source": source}


def label(store: ProductStore, catalog_dir: Path, budget: str, strategy: str, seed: int) -> dict:
    meta = json.loads((catalog_dir / "categories.json").read_text())
    count = parse_budget(budget, store.count())
    ids = choose(store, strategy, count, seed)
    result = reveal(store, ids, catalog_dir / "ground_truth.jsonl.gz", set(meta["exclusive"]),
                    strategy)
    log.info("oracle labelled %d products (%s, budget %s)", result["labelled"], strategy, budget)
    return {**result, "budget": budget}


def main(argv=None) -> None:
    from catalog_data import reviews_catalog

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m catalog_data.oracle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", required=True, help="e.g. 1%%, 2%%, 5%%, 10%%, 100%% or 500")
    parser.add_argument("--strategy", choices=STRATEGIES, default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalog-dir", type=Path, default=None,
                        help="the built catalogue whose ground truth to reveal (default: the demo)")
    args = parser.parse_args(argv)
    try:
        result = label(ProductStore.from_settings(), args.catalog_dir or reviews_catalog.default_dir(),
                       args.budget, args.strategy, args.seed)
    except ValueError as err:
        parser.error(str(err))
    emit_result(result)


if __name__ == "__main__":
    main()
