"""
### catalog_train

One training run over the whole catalogue: dump the products from the store,
preprocess them with Beam + TF Transform, train and evaluate the multi-objective
semi-supervised GAN (and, beside it, a supervised baseline and a tuned
class-balanced logistic regression, the peer a practitioner would try first),
predict every product (top categories with their paths) and publish the
predictions to RabbitMQ, from where the updater writes them into the store (a
newer run's predictions are never overwritten by an older one's); last, the
run's statistics go to the store's run index for the labelling and admin UIs.

Every file of the run lives under `{prefix}/runs/{run_id}/` (see `shared_config/paths.py`).
Each ML stage runs through its command-line entry point in the ML environment;
with `PRODCAT_TRAIN_ON=kubernetes` the training runs in a GPU pod instead
(see `prodcat_airflow/gpu_training.py`).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from airflow.sdk import Param, TaskGroup, dag, task
from prodcat_airflow.assets import TRAINED_RUN
from prodcat_airflow.gpu_training import train_on, train_pod
from prodcat_airflow.stages import record_run, run_id_for, run_stage, trainer_flags

from shared_config.paths import ID_MAX_LENGTH, ID_PATTERN, OBJECTIVES

# The form and the REST API refuse a bad run id or an empty objective list before a
# run is queued: the same rule as shared_config.paths.validate_id (empty: derived).
RUN_ID_PATTERN = "^$|" + ID_PATTERN


@dag(
    dag_id="catalog_train",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["prodcat"],
    doc_md=__doc__,
    params={
        "run_id": Param("", type="string", pattern=RUN_ID_PATTERN, maxLength=ID_MAX_LENGTH,
                        title="Run id",
                        description="Folder name of this run under {prefix}/runs/. Letters, digits "
                                    "and '_.:+=-'. Empty: derived from Airflow's run id."),
        "objectives": Param(list(OBJECTIVES), type="array", minItems=1, uniqueItems=True,
                            items={"type": "string", "enum": list(OBJECTIVES)},
                            title="Objectives",
                            description="exclusive: one category per product from human labels; "
                                        "rule_based: categories from the legacy keyword rules."),
        "model_type": Param("ssl_gan", type="string",
                            enum=["ssl_gan", "dnn", "wide_deep", "linear"], title="Model type",
                            description="ssl_gan: semi-supervised GAN, learns from unlabelled "
                                        "products too; dnn: hidden layers; wide_deep: DNN plus a "
                                        "linear part; linear: logistic regression."),
        "baseline_model_type": Param("dnn", type="string",
                                     enum=["none", "dnn", "wide_deep", "linear"],
                                     title="Baseline model type",
                                     description="A supervised model trained and evaluated beside "
                                                 "the main one, for comparison; none: skip."),
        "epochs": Param(10, type="integer", minimum=1, maximum=1000, title="Epochs"),
        "batch_size": Param(256, type="integer", minimum=1, maximum=65536, title="Batch size"),
    },
)
def catalog_train():
    @task
    def create_run(params=None, dag_run=None) -> str:
        run = run_id_for(params["run_id"], dag_run.run_id)
        run_stage("shared_config.runs", "create", "--run-id", run,
                  "--params", json.dumps(dict(params)), "--airflow-run-id", dag_run.run_id)
        return run

    @task
    def dump_products(run: str) -> dict:
        return run_stage("store.dump", "--run-id", run)

    @task
    def preprocess(run: str) -> dict:
        return run_stage("beam_pipelines.preprocess", "--run-id", run)

    @task
    def train(run: str, params=None) -> dict:
        return run_stage("trainer.controller", "train", "--run-id", run, *trainer_flags(params))

    @task
    def evaluate(run: str, trained: dict) -> dict:
        return run_stage("trainer.controller", "evaluate", "--run-id", run,
                         "--hparams-id", trained["hparams_id"])

    @task
    def train_and_evaluate_baseline(run: str, params=None) -> dict:
        """The supervised baseline and the tuned scikit-learn peer, on the same rows."""
        peer = run_stage("trainer.peer", "--run-id", run)
        if params["baseline_model_type"] == "none":
            return {"peer": peer, "skipped": "no baseline asked for"}
        flags = trainer_flags(params, params["baseline_model_type"])
        trained = run_stage("trainer.controller", "train", "--run-id", run, "--role", "baseline",
                            *flags)
        return {"peer": peer, **run_stage("trainer.controller", "evaluate", "--run-id", run,
                                          "--role", "baseline", "--hparams-id",
                                          trained["hparams_id"])}

    @task
    def predict(run: str, trained: dict) -> dict:
        return run_stage("trainer.controller", "predict", "--run-id", run,
                         "--hparams-id", trained["hparams_id"])

    @task(retries=2, retry_delay=timedelta(seconds=30))
    def publish_predictions(run: str) -> dict:
        """Safe to retry: it goes on after the last confirmed message."""
        return run_stage("broker.publish", "--run-id", run)

    @task(outlets=[TRAINED_RUN])
    def record_run_stats(run: str, outlet_events=None) -> dict:
        """Gather every stage's figures, then index them in the store for the UIs; the
        trained-run asset event names the run for active learning."""
        recorded = record_run(run)
        outlet_events[TRAINED_RUN].extra = {"run_id": run}
        return recorded

    run = create_run()
    dumped = dump_products(run)
    preprocessed = preprocess(run)
    dumped >> preprocessed
    with TaskGroup("model", tooltip="train, evaluate, predict"):
        trained = train_pod().output if train_on() == "kubernetes" else train(run)
        preprocessed >> trained
        evaluated = evaluate(run, trained)
        predicted = predict(run, trained)
        evaluated >> predicted
    baseline = train_and_evaluate_baseline(run)
    preprocessed >> baseline
    published = publish_predictions(run)
    predicted >> published
    [published, baseline] >> record_run_stats(run)


catalog_train()
