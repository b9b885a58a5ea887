"""What the UI reads: products (search, one product), the runs index, the categories.

The exclusive categories a person may choose are the classes of the newest run in
the runs index (its per-class rows), plus any label already in the store; a label
outside them is refused (a typo would otherwise become a new class).
"""
from __future__ import annotations

import time

from shared_config.paths import InvalidId, validate_id
from store.client import ProductStore
from store.run_stats import runs_store

CATEGORY_CACHE_SECONDS = 30.0


def valid_id(value: str) -> bool:
    """A run or product id the UI will look up (the pipeline's id rule)."""
    try:
        validate_id(value)
    except InvalidId:
        return False
    return True


class Catalog:
    """The product store and the runs index, as the pages read them."""

    def __init__(self, settings):
        self.products = ProductStore.from_settings(settings)
        self.runs = runs_store(settings)
        self._categories: tuple[float, list[str]] = (0.0, [])

    # -- products -----------------------------------------------------------------------
    def product(self, product_id: str) -> dict | None:
        found = self.products.sources([product_id]).get(product_id)
        return None if found is None else dict(found, id=product_id)

    def search(self, text: str, size: int = 25) -> list[dict]:
        """Products whose id is ``text``, then those whose title or brand matches it."""
        should = [{"match": {"title": {"query": text}}}, {"match": {"brand": {"query": text}}}]
        if valid_id(text):
            should.insert(0, {"ids": {"values": [text]}})
        hits = self.products.client.search(index=self.products.index, body={
            "size": size, "query": {"bool": {"should": should, "minimum_should_match": 1}}})
        exact = [h for h in hits["hits"]["hits"] if h["_id"] == text]
        rest = [h for h in hits["hits"]["hits"] if h["_id"] != text]
        return [dict(h["_source"], id=h["_id"]) for h in exact + rest]

    # -- runs -----------------------------------------------------------------------------
    def _runs_index_exists(self) -> bool:
        return bool(self.runs.client.indices.exists(index=self.runs.index))

    def run_list(self, size: int = 100) -> list[dict]:
        if not self._runs_index_exists():
            return []
        hits = self.runs.client.search(index=self.runs.index, body={
            "size": size, "sort": [{"created_at": "desc"}],
            "_source": {"excludes": ["stats", "per_class"]}})
        return [h["_source"] for h in hits["hits"]["hits"]]

    def run(self, run_id: str) -> dict | None:
        if not self._runs_index_exists():
            return None
        return self.runs.sources([run_id]).get(run_id)

    # -- categories -------------------------------------------------------------------
    def categories(self) -> list[str]:
        """The exclusive categories a label may name (cached for a few seconds)."""
        made, cached = self._categories
        if time.monotonic() - made < CATEGORY_CACHE_SECONDS and cached:
            return cached
        names: set[str] = set()
        if self._runs_index_exists():
            newest = self.runs.client.search(index=self.runs.index, body={
                "size": 1, "sort": [{"created_at": "desc"}], "_source": ["per_class"]})
            for hit in newest["hits"]["hits"]:
                names.update(row["category"] for row in hit["_source"].get("per_class", [])
                             if row.get("objective") == "exclusive" and row.get("model") == "model")
        labels = self.products.client.search(index=self.products.index, body={
            "size": 0, "aggs": {"labels": {"terms": {"field": "exclusive_label", "size": 1000}}}})
        names.update(b["key"] for b in labels["aggregations"]["labels"]["buckets"] if b["key"])
        result = sorted(names)
        self._categories = (time.monotonic(), result)
        return result
