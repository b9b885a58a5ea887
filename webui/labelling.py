"""Labels written by people: the queue, one label, undo, the bulk view, progress.

Every write goes through ``ProductStore.write_if`` (read with the sequence number,
write back only if unchanged), and on top of that a label has its own version,
``label_version``: a form carries the version the person saw, and a write finds the
product's label changed since (someone else labelled it) is refused as a conflict
with who and when, and nothing is written. A new prediction arriving in between is
not a conflict (it does not touch the label).

A label sets ``exclusive_label`` (or ``label_none``: "not in any exclusive
category", which the exclusive objective then leaves out), ``label_source`` (the
strategy whose ``label_request`` queued the product, or ``manual``),
``labelled_by``, ``labelled_at``, ``label_version`` and appends to
``label_history`` (each entry keeps what it replaced, which is what undo restores).
"""
from __future__ import annotations

import datetime as dt
import random

from store.client import APPLIED, TRANSIENT, ProductStore

MANUAL = "manual"
CONFLICT = "conflict"
HISTORY_KEPT = 50
LABEL_FIELDS = ("exclusive_label", "label_none", "label_source", "labelled_by", "labelled_at")
# Feeds carry ``exclusive_label: ""`` for "no label": labelled means a non-empty label, or a
# person's answer (``labelled_at``: "none of these" has no label).
LABELLED = {"bool": {"filter": [{"exists": {"field": "exclusive_label"}}],
                     "must_not": [{"term": {"exclusive_label": ""}}]}}
UNLABELLED = [LABELLED, {"exists": {"field": "labelled_at"}}]
QUEUE_QUERY = {"bool": {"filter": [{"exists": {"field": "label_request"}}],
                        "must_not": UNLABELLED}}


class LabelError(ValueError):
    """A label that cannot be written as asked: the message says why."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def next_products(store: ProductStore, count: int = 1, skip: tuple[str, ...] = ()) -> list[dict]:
    """The next unlabelled products: the queue first (newest request first, then its rank),
    then products drawn at random when the queue is empty. Each is ``{"id", "source",
    "from_queue", **fields}``."""
    must_not = UNLABELLED + ([{"ids": {"values": list(skip)}}] if skip else [])
    queued = store.client.search(index=store.index, body={
        "size": count, "query": {"bool": {"filter": QUEUE_QUERY["bool"]["filter"],
                                          "must_not": must_not}},
        "sort": [{"label_request.requested_at": "desc"}, {"label_request.rank": "asc"}]})
    found = [dict(hit["_source"], id=hit["_id"], from_queue=True)
             for hit in queued["hits"]["hits"]]
    if len(found) < count:
        seed = random.randrange(2**31)
        drawn = store.client.search(index=store.index, body={
            "size": count - len(found), "query": {"function_score": {
                "query": {"bool": {"must_not": must_not + [{"exists": {
                    "field": "label_request"}}]}},
                "random_score": {"seed": seed, "field": "_seq_no"}}}})
        found += [dict(hit["_source"], id=hit["_id"], from_queue=False)
                  for hit in drawn["hits"]["hits"]]
    return found


def suggestions(product: dict, k: int = 5) -> list[dict]:
    """The model's top-``k`` exclusive categories with scores, best first."""
    exclusive = (product.get("prediction") or {}).get("exclusive") or {}
    top = exclusive.get("top") or ([exclusive] if exclusive.get("category") else [])
    return [{"category": t["category"], "score": float(t.get("score", 0))}
            for t in top[:k] if isinstance(t, dict) and isinstance(t.get("category"), str)]


def _holder(source: dict) -> str:
    if source.get("labelled_by"):
        return f"{source['labelled_by']} at {source.get('labelled_at', '?')}"
    return "another change"


def label(store: ProductStore, labels: dict[str, dict], user: str) -> dict[str, str]:
    """Write ``{product_id: {"category": name or None (none of these), "seen_version": int}}``
    by ``user``; an outcome per id: ``applied``, ``conflict: ...``, ``transient`` or
    ``rejected: ...``. Categories must have been checked by the caller."""
    now = _now()

    def decide(source: dict, item: dict):
        version = source.get("label_version") or 0
        if version != item["seen_version"]:
            return f"{CONFLICT}: labelled by {_holder(source)} since you opened it"
        request = source.get("label_request") or {}
        entry = {"action": "label", "category": item["category"], "by": user, "at": now,
                 "previous": {f: source.get(f) for f in LABEL_FIELDS}}
        return {"exclusive_label": item["category"], "label_none": item["category"] is None,
                "label_source": request.get("strategy") or MANUAL, "labelled_by": user,
                "labelled_at": now, "label_version": version + 1,
                "label_history": (source.get("label_history") or [])[-HISTORY_KEPT + 1:]
                + [entry]}

    outcome = store.write_if(labels, decide)
    store.refresh()
    return outcome


def undo(store: ProductStore, product_id: str, version: int, user: str) -> str:
    """Put back what the label at ``version`` replaced, if the label is still that one;
    the outcome (``applied``, ``conflict: ...``, ...)."""
    now = _now()

    def decide(source: dict, _):
        history = source.get("label_history") or []
        if (source.get("label_version") or 0) != version or not history \
                or history[-1].get("action") != "label":
            return f"{CONFLICT}: the label changed since ({_holder(source)}); nothing undone"
        previous = history[-1].get("previous") or {}
        return {**{f: previous.get(f) for f in LABEL_FIELDS}, "label_version": version + 1,
                "label_history": history[-HISTORY_KEPT + 1:] + [
                    {"action": "undo", "by": user, "at": now, "undid": history[-1].get("category")}]}

    outcome = store.write_if({product_id: None}, decide)[product_id]
    store.refresh()
    return outcome


def predicted_in(store: ProductStore, category: str, size: int, offset: int = 0) -> tuple[int, list]:
    """Unlabelled products predicted in ``category`` (or below it), the most confident first:
    ``(how many, a page of them)``."""
    query = {"bool": {"filter": [{"term": {"prediction_path": category}}], "must_not": UNLABELLED}}
    result = store.client.search(index=store.index, body={
        "size": size, "from": offset, "query": query, "track_total_hits": True,
        "sort": [{"prediction_version": "desc"}, {"id": "asc"}]})
    return (result["hits"]["total"]["value"],
            [dict(hit["_source"], id=hit["_id"]) for hit in result["hits"]["hits"]])


def progress(store: ProductStore) -> dict:
    """Queue left, labelled today, and today's labels per person."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = {"range": {"labelled_at": {"gte": today.isoformat()}}}
    people = store.client.search(index=store.index, body={
        "size": 0, "query": {"bool": {"filter": [since, {"exists": {"field": "labelled_by"}}]}},
        "aggs": {"people": {"terms": {"field": "labelled_by", "size": 100}}}})
    return {"queue_left": store.count(QUEUE_QUERY),
            "labelled_today": people["hits"]["total"]["value"],
            "per_person": {b["key"]: b["doc_count"]
                           for b in people["aggregations"]["people"]["buckets"]}}


def message(outcome: str) -> str:
    """An outcome as a person reads it."""
    if outcome == APPLIED:
        return "saved"
    if outcome == TRANSIENT:
        return "the store is busy: nothing was written, try again"
    return outcome
