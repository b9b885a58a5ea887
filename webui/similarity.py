"""People's judgements of a product's visual neighbours, kept as triplets.

On a product's page each neighbour the updater wrote (``similar_products``) can be
marked *similar* or *not similar*. The judgement goes on the anchor product, in
``similarity_judgements`` (one entry per neighbour and person, the latest kept, with
the run whose neighbours were judged), through ``ProductStore.write_if``; only a
neighbour the product lists now can be judged. ``similarity_judged_at`` makes judged
products findable. ``triplets`` turns them into (anchor, similar, not similar): the
evaluation set a look at the neighbours never gave.
"""
from __future__ import annotations

import datetime as dt

from store.client import ProductStore

KEPT = 1000  # judgements per product
NOT_LISTED = "refused: that product is not among this product's neighbours now"


def neighbours(product: dict, shown: int = 20) -> list[dict]:
    """The product's first ``shown`` neighbours, each with the judgement people gave it."""
    judged = {}
    for entry in product.get("similarity_judgements") or []:
        judged.setdefault(entry.get("neighbour"), []).append(entry)
    return [{"id": n.get("id"), "score": n.get("score"), "judgements": judged.get(n.get("id"), [])}
            for n in (product.get("similar_products") or [])[:shown]
            if isinstance(n, dict) and isinstance(n.get("id"), str)]


def judge(store: ProductStore, product_id: str, neighbour: str, similar: bool, user: str) -> str:
    """Record ``user``'s verdict on one neighbour of ``product_id``; the store's outcome."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def decide(source: dict, _):
        listed = {n.get("id") for n in source.get("similar_products") or [] if isinstance(n, dict)}
        if neighbour not in listed:
            return NOT_LISTED
        kept = [e for e in source.get("similarity_judgements") or []
                if (e.get("neighbour"), e.get("by")) != (neighbour, user)]
        entry = {"neighbour": neighbour, "similar": similar, "by": user, "at": now,
                 "run_id": source.get("similar_run_id")}
        return {"similarity_judgements": (kept + [entry])[-KEPT:], "similarity_judged_at": now}

    outcome = store.write_if({product_id: None}, decide)[product_id]
    store.refresh()
    return outcome


def triplets(store: ProductStore, size: int = 10_000) -> list[tuple[str, str, str]]:
    """(anchor, a neighbour judged similar, one judged not similar) for every judged product
    (the latest verdict per neighbour wins; the first ``size`` judged products)."""
    found = []
    for product in store.search({"exists": {"field": "similarity_judged_at"}}, size=size):
        verdicts = {}
        for entry in sorted(product.get("similarity_judgements") or [], key=lambda e: e["at"]):
            verdicts[entry["neighbour"]] = entry["similar"]
        found += [(product["id"], yes, no) for yes, v in verdicts.items() if v
                  for no, w in verdicts.items() if not w]
    return found
