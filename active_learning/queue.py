"""The labelling queue in the store, and the selection's statistics.

A request is a ``label_request`` object on the product (run id, strategy, score,
rank, split, requested time), written with optimistic concurrency
(``ProductStore.write_if``, the versioned path the predictions take): a product
that is labelled or already queued is left alone, and a label that arrives while
the request is being written wins (the write sees the product changed, reads it
again, and skips it). A request never touches ``exclusive_label``. The oracle
(``catalog_data/oracle.py --strategy queue``) and the labelling UI read this queue.
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import time

import numpy as np

from shared_config import storage
from shared_config.paths import RunPaths
from store.client import APPLIED, TRANSIENT, ProductStore

log = logging.getLogger("prodcat.selection")
LABELLED, QUEUED = "already_labelled", "already_queued"
RETRIES = 5


def queue_requests(store: ProductStore, requests: list[dict]) -> dict[str, str]:
    """Write each ``{"id", ...request fields}``; the outcome per id (``applied``,
    ``already_labelled``, ``already_queued``, ``rejected: ...``)."""
    now = dt.datetime.now(dt.UTC).isoformat()

    def decide(source: dict, request: dict):
        if source.get("exclusive_label"):
            return LABELLED
        if source.get("label_request"):
            return QUEUED
        return {"label_request": {**request, "requested_at": now}}

    todo = {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in requests}
    outcome: dict[str, str] = {}
    for attempt in range(RETRIES):
        outcome.update(store.write_if(todo, decide))
        todo = {pid: todo[pid] for pid in todo if outcome[pid] == TRANSIENT}
        if not todo:
            break
        time.sleep(0.5 * 2 ** attempt)
    store.refresh()
    return outcome


def queue_batch(paths: RunPaths, store: ProductStore) -> dict:
    """Queue the batch ``choose`` wrote."""
    scored = storage.read_json(paths.stats_file("selection_score"))
    batch = storage.read_json(paths.selection_dir + "batch.json")
    strategy = scored["strategy"] + ("+diverse" if scored["diverse"] else "")
    outcome = queue_requests(store, [
        {"id": c["id"], "run_id": paths.run_id, "strategy": strategy if c["split"] == "train"
         else "random", "score": round(c["score"], 6), "rank": c["rank"], "split": c["split"]}
        for c in batch])
    counts = collections.Counter(o if not o.startswith("rejected") else "rejected"
                                 for o in outcome.values())
    log.info("label requests: %s", dict(counts))
    storage.write_json(paths.selection_dir + "queued.json",
                       sorted(pid for pid, o in outcome.items() if o == APPLIED))
    return {"queued": counts.get(APPLIED, 0), "outcomes": dict(counts),
            "queued_file": paths.selection_dir + "queued.json"}


def record_selection(paths: RunPaths, previous_macro_f1: float | None = None) -> dict:
    """The selection's figures, kept as ``stats/selection.json`` (the run statistics and
    the runs index pick them up): how many were queued, the scores' quantiles, the batch's
    class mix as predicted, and the stopping signal."""
    scored = storage.read_json(paths.stats_file("selection_score"))
    queued = storage.read_json(paths.stats_file("selection_queue"))
    chosen = {c["id"]: c for c in storage.read_json(paths.selection_dir + "batch.json")}
    queued_ids = storage.read_json(paths.selection_dir + "queued.json")
    train = [chosen[i] for i in queued_ids if chosen[i]["split"] == "train"]
    scores = np.array([c["score"] for c in train]) if train else np.zeros(0)
    evaluated = storage.read_json(paths.stats_file("evaluate_valid")) if storage.exists(
        paths.stats_file("evaluate_valid")) else {}
    macro_f1 = evaluated.get("objectives", {}).get("exclusive", {}).get("macro_f1")
    change = None if macro_f1 is None or previous_macro_f1 is None else macro_f1 - previous_macro_f1
    result = {
        "strategy": scored["strategy"], "diverse": scored["diverse"],
        "queued": queued["queued"],
        "queued_per_split": dict(collections.Counter(chosen[i]["split"] for i in queued_ids)),
        "score_quantiles": {f"p{q}": round(float(np.percentile(scores, q)), 4)
                            for q in (0, 25, 50, 75, 100)} if len(scores) else {},
        "predicted_class_mix": dict(collections.Counter(c.get("predicted") for c in train)
                                    .most_common()),
        "stopping": {
            "pool_mean_uncertainty": scored["pool_mean_uncertainty"],
            "valid_macro_f1": macro_f1, "previous_valid_macro_f1": previous_macro_f1,
            "valid_macro_f1_change": None if change is None else round(change, 4),
            # small-text's criteria in spirit: stop when a round no longer moves validation
            "suggest_stop": change is not None and abs(change) < 0.005,
        },
    }
    storage.write_json(paths.stats_file("selection"), result)
    return result
