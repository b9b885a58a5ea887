"""The run statistics index: one document per run, for a labelling or admin UI.

    python -m store.run_stats --run-id R

Reads the run's ``stats/run.json`` (``python -m shared_config.runs record-stats``)
and its manifest, and indexes the run under its id in ``PRODCAT_RUNS_INDEX``:
counts at each stage, the headline validation metrics of the model and of its
baseline and of the tuned logistic-regression peer (on the same validation
products), per-class precision/recall/F1 as a list a UI can filter, and the whole
summary (not indexed) for anything else. Indexing the same run again replaces it.
"""
from __future__ import annotations

import argparse

from shared_config import storage
from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import RunPaths
from shared_config.settings import Settings
from store.client import ProductStore

RUN_MAPPINGS = {
    "dynamic": False,
    "properties": {
        "id": {"type": "keyword"},
        "run_id": {"type": "keyword"},
        "airflow_run_id": {"type": "keyword"},
        "created_at": {"type": "date"},
        "recorded_at": {"type": "date"},
        "model": {"type": "keyword"},
        "model_type": {"type": "keyword"},
        "baseline_model": {"type": "keyword"},
        "counts": {"properties": {name: {"type": "long"} for name in (
            "dumped", "quarantined", "examples", "predicted", "published")}},
        "metrics": {"properties": {name: {"type": "float"} for name in (
            "exclusive_accuracy", "exclusive_macro_f1", "rule_based_micro_f1",
            "rule_based_macro_f1", "baseline_exclusive_accuracy", "baseline_exclusive_macro_f1",
            "peer_exclusive_accuracy", "peer_exclusive_macro_f1")}},
        # kept, not indexed (the UIs read it whole): a run over the generated catalogue has
        # some 14,000 rows (every rule category, model and baseline), and osmem, given them
        # as indexed fields, then died on later writes to the products index in 2 of 6 probes
        # (a 59 GB allocation) where it never did with them left unindexed (0 of 8)
        "per_class": {"type": "object", "enabled": False},
        "selection": {"properties": {
            "strategy": {"type": "keyword"}, "queued": {"type": "long"},
            "pool_mean_uncertainty": {"type": "float"},
            "valid_macro_f1_change": {"type": "float"}, "suggest_stop": {"type": "boolean"}}},
        "stats": {"type": "object", "enabled": False},
    },
}
HEADLINES = {"exclusive": ("accuracy", "macro_f1"), "rule_based": ("micro_f1", "macro_f1")}


def run_document(summary: dict, manifest: dict) -> dict:
    """The run's document from its stats summary and manifest."""
    stages = summary["stages"]

    def get(stage: str, key: str):
        return stages.get(stage, {}).get(key)

    metrics, per_class = {}, []
    for role, prefix in (("model", ""), ("baseline", "baseline_"), ("peer", "peer_")):
        objectives = stages.get(f"{prefix}evaluate_valid", {}).get("objectives", {})
        for objective, figures in objectives.items():
            for name in HEADLINES[objective]:
                if role == "model" or objective == "exclusive":
                    metrics[f"{prefix}{objective}_{name}"] = figures[name]
            per_class += [{"model": role, "objective": objective, "category": category, **values}
                          for category, values in figures.get("per_class", {}).items()]
    examples = get("preprocess", "examples") or {}
    counts = {"dumped": get("dump", "products"), "quarantined": get("preprocess", "quarantined"),
              "examples": sum(v for k, v in examples.items() if k.startswith("catalog_")) or None,
              "predicted": get("predict", "predictions"), "published": get("publish", "published")}
    selection = stages.get("selection", {})
    selected = {"strategy": selection.get("strategy"), "queued": selection.get("queued"),
                **{k: selection.get("stopping", {}).get(k) for k in (
                    "pool_mean_uncertainty", "valid_macro_f1_change", "suggest_stop")}}
    return {"id": summary["run_id"], "run_id": summary["run_id"],
            **({"selection": selected} if selection else {}),
            "created_at": manifest.get("created_at"),
            "airflow_run_id": manifest.get("airflow_run_id"), "recorded_at": summary.get("recorded_at"),
            "model": get("train", "hparams_id"), "model_type": get("train", "model_type"),
            "baseline_model": get("baseline_train", "hparams_id"),
            "counts": {k: v for k, v in counts.items() if v is not None},
            "metrics": metrics, "per_class": per_class, "stats": summary}


def runs_store(settings: Settings) -> ProductStore:
    return ProductStore(settings.store_backend, settings.store_url, settings.runs_index,
                        mappings=RUN_MAPPINGS)


def previous_exclusive_macro_f1(settings: Settings, run_id: str) -> float | None:
    """The validation macro-F1 of the run recorded before ``run_id`` (None if none)."""
    store = runs_store(settings)
    if not store.client.indices.exists(index=settings.runs_index):
        return None
    store.refresh()
    this = store.backend.search(settings.runs_index, {"size": 1, "query": {"term": {
        "run_id": run_id}}})["hits"]["hits"]
    query = {"bool": {"must_not": [{"term": {"run_id": run_id}}]}}
    if this and this[0]["_source"].get("created_at"):
        query["bool"]["filter"] = [{"range": {"created_at": {
            "lt": this[0]["_source"]["created_at"]}}}]
    hits = store.backend.search(settings.runs_index, {"size": 1, "query": query, "sort": [
        {"created_at": "desc"}]})["hits"]["hits"]
    return hits[0]["_source"].get("metrics", {}).get("exclusive_macro_f1") if hits else None


def index_run(paths: RunPaths, settings: Settings) -> dict:
    summary_file = paths.stats_file("run")
    if not storage.exists(summary_file):
        raise FileNotFoundError(f"no {summary_file}: run `python -m shared_config.runs "
                                f"record-stats --run-id {paths.run_id}` first")
    manifest = storage.read_json(paths.manifest) if storage.exists(paths.manifest) else {}
    document = run_document(storage.read_json(summary_file), manifest)
    store = runs_store(settings)
    store.create_index()
    store.index_products([document])
    return {"index": settings.runs_index, "run_id": paths.run_id,
            "per_class_rows": len(document["per_class"]), "metrics": document["metrics"]}


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m store.run_stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    finish_stage(paths, "run_stats_indexed", index_run(paths, Settings.from_env()))


if __name__ == "__main__":
    main()
