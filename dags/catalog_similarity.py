"""
### catalog_similarity

Visual similarity: after each `catalog_train` run (the `prodcat://catalog_train/trained`
asset, whose event carries the run id) — or by hand, for any run — train the image
tower on the run's labels and embed every product's image (the trainer's `embed`), find
each product's `k` nearest neighbours within its restriction group (the predicted
category at `level`, or the whole catalogue at level 0) with one faiss index per group,
and publish them through RabbitMQ: the updater writes `similar_products`
(`[{id, score}]`), versioned like predictions (exactly once in effect, never an older
run's over a newer one's), with the embedding's tokens for the store's full-text search.
See `trainer/embed.py`, `similarity/neighbours.py` and the README's *Visual similarity*.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TaskGroup, dag, task
from prodcat_airflow.assets import TRAINED_RUN, trained_run
from prodcat_airflow.stages import record_run, run_stage

from shared_config.paths import ID_MAX_LENGTH, ID_PATTERN


@dag(
    dag_id="catalog_similarity",
    schedule=[TRAINED_RUN],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["prodcat"],
    doc_md=__doc__,
    params={
        "run_id": Param("", type="string", pattern="^$|" + ID_PATTERN, maxLength=ID_MAX_LENGTH,
                        title="Run id",
                        description="The trained run whose products are compared. Empty: the "
                                    "run whose training triggered this one (by hand: the "
                                    "latest)."),
        "k": Param(100, type="integer", minimum=1, maximum=1000, title="Neighbours per product"),
        "level": Param(2, type="integer", minimum=0, maximum=10, title="Restriction level",
                       description="Neighbours share the predicted category path's first "
                                   "`level` names (2: the second-level category); 0: the "
                                   "whole catalogue."),
        "index": Param("auto", type="string", enum=["auto", "flat", "hnsw", "ivfpq"],
                       title="Index type",
                       description="auto: exact search for small groups, HNSW up to 2 million "
                                   "products, IVF-PQ above."),
        "embed_epochs": Param(20, type="integer", minimum=1, maximum=500,
                              title="Image tower epochs",
                              description="At most; the best epoch on validation is kept."),
        "with_vectors": Param(False, type="boolean", title="Publish the vectors",
                              description="Also write each product's vector, for a store "
                                          "that answers knn queries (Elasticsearch "
                                          "dense_vector)."),
    },
)
def catalog_similarity():
    @task(inlets=[TRAINED_RUN])
    def resolve_run(params=None, triggering_asset_events=None, inlet_events=None) -> str:
        """The run asked for, or the trained run that triggered this one (by hand: the latest)."""
        return trained_run(params["run_id"], triggering_asset_events, inlet_events)

    @task
    def embed(run: str, params=None) -> dict:
        return run_stage("trainer.controller", "embed", "--run-id", run,
                         "--embed-epochs", str(params["embed_epochs"]))

    @task
    def neighbours(run: str, params=None) -> dict:
        return run_stage("similarity.neighbours", "--run-id", run, "--k", str(params["k"]),
                         "--level", str(params["level"]), "--index", params["index"],
                         *(["--with-vectors"] if params["with_vectors"] else []))

    @task(retries=2, retry_delay=timedelta(seconds=30))
    def publish(run: str) -> dict:
        """Safe to retry: it goes on after the last confirmed message."""
        return run_stage("broker.publish", "--run-id", run, "--what", "similar")

    @task
    def record_stats(run: str) -> dict:
        return record_run(run)

    run = resolve_run()
    with TaskGroup("similarity", tooltip="embed -> neighbours -> publish"):
        embedded = embed(run)
        found = neighbours(run)
        published = publish(run)
        embedded >> found >> published
    published >> record_stats(run)


catalog_similarity()
