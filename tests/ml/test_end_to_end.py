"""The catalog_train DAG run through Airflow against the real store and a real RabbitMQ node,
its tasks sent to the LocalExecutor (the model and the baseline task side by side)."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from benchmarks.end_to_end import task_times
from local_stack.demo import airflow_bin, wait_for_updates
from local_stack.stack import REPO_ROOT, execution_api, start_updater, stop_process
from shared_config import storage
from shared_config.paths import RunPaths
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products
from store.run_stats import runs_store

PRODUCTS = 300


@pytest.fixture
def airflow_env(broker_settings, tmp_path):
    if not os.path.exists(airflow_bin()):
        pytest.fail(f"the Airflow environment is missing ({airflow_bin()}): run `make install`")
    env = {**os.environ, **broker_settings.as_env(),
           "PYTHONPATH": str(REPO_ROOT),
           "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True)
    return env


def test_catalog_train_dag_updates_every_product_in_the_store(broker_settings, airflow_env,
                                                               tmp_path):
    store = ProductStore.from_settings(broker_settings)
    load_products(store, demo_catalog.generate(PRODUCTS, seed=11, exclusive_fraction=0.3), recreate=True)
    updater = start_updater(airflow_env, tmp_path / "updater.log")
    try:
        with execution_api(airflow_env, airflow_bin(), tmp_path / "api-server.log") as env:
            started = time.monotonic()
            completed = subprocess.run(
                [airflow_bin(), "dags", "test", "catalog_train", "--use-executor", "--conf",
                 json.dumps({"run_id": "e2e-run", "epochs": 2})],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-5000:]
        updated = wait_for_updates(store, "e2e-run", PRODUCTS, timeout=120)
    finally:
        stop_process(updater)
    assert updated == PRODUCTS, (tmp_path / "updater.log").read_text()[-3000:]

    paths = RunPaths.for_run("e2e-run", broker_settings.prefix)
    stats = storage.read_json(paths.stats_file("run"))["stages"]
    assert stats["dump"]["products"] == PRODUCTS
    examples = stats["preprocess"]["examples"]
    assert sum(examples[f"catalog_{split}"] for split in ("train", "valid", "test")) == PRODUCTS
    assert stats["publish"]["published"] == PRODUCTS
    runs = runs_store(broker_settings)
    runs.refresh()
    indexed = runs.get("e2e-run")
    assert indexed["counts"]["published"] == PRODUCTS and indexed["model"] == stats["train"]["hparams_id"]
    assert indexed["metrics"]["exclusive_macro_f1"] == stats["evaluate_valid"]["objectives"][
        "exclusive"]["macro_f1"]
    assert set(stats["evaluate_valid"]["objectives"]) == {"exclusive", "rule_based"}
    # the peer learnt from the model's own labelled rows and is scored on the same products
    peer, model = stats["peer_evaluate_valid"], stats["evaluate_valid"]["objectives"]["exclusive"]
    assert peer["trained_on"] == examples["exclusive_train"]
    assert peer["objectives"]["exclusive"]["examples"] == model["examples"]
    assert indexed["metrics"]["peer_exclusive_macro_f1"] == peer["objectives"]["exclusive"][
        "macro_f1"]
    manifest = storage.read_json(paths.manifest)
    assert manifest["params"]["epochs"] == 2 and manifest["airflow_run_id"]
    # the executor ran the model's training and the baseline task at the same time
    tasks = task_times(airflow_env, "catalog_train", manifest["airflow_run_id"])
    model, baseline = tasks["model.train"], tasks["train_and_evaluate_baseline"]
    assert max(model[0], baseline[0]) < min(model[1], baseline[1]), tasks
    assert storage.glob(paths.tfrecord_files("exclusive", "train"))
    assert storage.exists(paths.checkpoints(stats["train"]["hparams_id"]) + "model.keras")

    products = list(store.iter_products())
    assert len(products) == PRODUCTS
    for product in products:
        assert product["prediction_run_id"] == "e2e-run"
        prediction = product["prediction"]
        assert prediction["exclusive"]["category"] in demo_catalog.CATEGORY_TREE
        category = prediction["exclusive"]["category"]
        assert prediction["exclusive"]["path"][-1] == category
        assert product["prediction_path"] == prediction["exclusive"]["path"]
        assert category.startswith(prediction["exclusive"]["path"][0])
        assert 0 <= prediction["exclusive"]["score"] <= 1
        assert prediction["model"] == stats["train"]["hparams_id"]
        assert product["title"]  # the product's own fields are kept

    # active learning follows the trained run (the asset's latest event names it): a batch
    # of the training split chosen by strategy, a random share of valid/test, queued
    selection = subprocess.run(
        [airflow_bin(), "dags", "test", "catalog_label_selection", "--conf",
         json.dumps({"batch_size": 20, "eval_share": 0.25})],
        cwd=REPO_ROOT, env=airflow_env, capture_output=True, text=True, check=False)
    assert selection.returncode == 0, selection.stdout[-5000:] + selection.stderr[-5000:]
    stats = storage.read_json(paths.stats_file("run"))["stages"]
    assert stats["selection"]["queued"] == 25 and stats["selection"]["queued_per_split"][
        "train"] == 20
    store.refresh()
    requested = [p for p in store.iter_products() if p.get("label_request")]
    assert len(requested) == 25 and not [p for p in requested if p.get("exclusive_label")]
    assert {p["label_request"]["run_id"] for p in requested} == {"e2e-run"}
    runs.refresh()
    assert runs.get("e2e-run")["selection"]["queued"] == 25
    print(f"end-to-end run took {time.monotonic() - started:.0f} s")
