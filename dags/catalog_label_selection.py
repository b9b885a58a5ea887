"""
### catalog_label_selection

Active learning: after each `catalog_train` run (the `prodcat://catalog_train/trained`
asset, whose event carries the run id) — or by hand, for any run — score the run's
unlabelled products with the trained model, choose the batch the labelling team labels
next, and write it into the store as a labelling queue (`label_request` on each product;
the oracle and the labelling UI read it).

Only the training split is chosen by strategy; validation and test products are drawn at
random (`eval_share`), so the figures measured on them stay unbiased. The selection's
figures — how many were queued, the score distribution, the batch's predicted class mix
and a stopping signal — go to the run's statistics and the runs index.
See `active_learning/select.py`.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, TaskGroup, dag, task
from prodcat_airflow.assets import TRAINED_RUN, trained_run
from prodcat_airflow.stages import record_run, run_stage

from shared_config.paths import ID_MAX_LENGTH, ID_PATTERN
from shared_config.selection import DEFAULT_STRATEGY, DIVERSITY_WEIGHT, STRATEGIES


@dag(
    dag_id="catalog_label_selection",
    schedule=[TRAINED_RUN],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["prodcat"],
    doc_md=__doc__,
    params={
        "run_id": Param("", type="string", pattern="^$|" + ID_PATTERN, maxLength=ID_MAX_LENGTH,
                        title="Run id",
                        description="The trained run to select from. Empty: the run whose "
                                    "training triggered this one (by hand: the latest)."),
        "strategy": Param(DEFAULT_STRATEGY, type="string", enum=list(STRATEGIES), title="Strategy",
                          description="density: uncertain (a small gap between the two "
                                      "likeliest classes) and typical of the pool first, the "
                                      "active-learning benchmark's best; see the README for "
                                      "every strategy."),
        "batch_size": Param(100, type="integer", minimum=1, maximum=100_000, title="Batch size",
                            description="Training products to queue for labelling."),
        "diverse": Param(True, type="boolean", title="Diverse batch",
                         description="One listing per product group, and no near-copies."),
        "diversity_weight": Param(DIVERSITY_WEIGHT, type="number", minimum=0, maximum=1,
                                  title="Diverse batch: weight of spread",
                                  description="0: by score alone (one listing per group "
                                              "still); 1: by spread alone."),
        "eval_share": Param(0.2, type="number", minimum=0, maximum=1, title="Evaluation share",
                            description="Valid/test products drawn at random, as a share of "
                                        "the batch size."),
        "committee_dropout": Param(3, type="integer", minimum=0, maximum=20,
                                   title="Committee: MC-dropout members",
                                   description="For the committee strategy, besides the model "
                                               "and the run's baseline."),
    },
)
def catalog_label_selection():
    @task(inlets=[TRAINED_RUN])
    def resolve_run(params=None, triggering_asset_events=None, inlet_events=None) -> str:
        """The run asked for, or the trained run that triggered this one (by hand: the latest)."""
        return trained_run(params["run_id"], triggering_asset_events, inlet_events)

    @task
    def score(run: str, params=None) -> dict:
        flags = ["--strategy", params["strategy"], "--batch-size", str(params["batch_size"]),
                 "--eval-share", str(params["eval_share"]),
                 "--committee-dropout", str(params["committee_dropout"]),
                 "--diversity-weight", str(params["diversity_weight"])]
        return run_stage("active_learning.select", "score", "--run-id", run, *flags,
                         *(["--diverse"] if params["diverse"] else []))

    @task
    def choose(run: str) -> dict:
        return run_stage("active_learning.select", "choose", "--run-id", run)

    @task
    def queue(run: str) -> dict:
        return run_stage("active_learning.select", "queue", "--run-id", run)

    @task
    def record_stats(run: str) -> dict:
        """The selection's figures, then the run's statistics and its runs-index document."""
        selection = run_stage("active_learning.select", "stats", "--run-id", run)
        record_run(run)
        return selection

    run = resolve_run()
    with TaskGroup("select", tooltip="score -> choose -> queue"):
        scored = score(run)
        chosen = choose(run)
        queued = queue(run)
        scored >> chosen >> queued
    queued >> record_stats(run)


catalog_label_selection()
