"""Every DAG file imports cleanly, in the slim Airflow environment (no TensorFlow)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from airflow.models.dagbag import DagBag

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "catalog_train" in dagbag.dags


def test_dag_files_do_not_load_tensorflow(dagbag):
    assert "tensorflow" not in sys.modules and "apache_beam" not in sys.modules


def test_catalog_train_runs_the_stages_in_order(dagbag):
    dag = dagbag.dags["catalog_train"]
    order = ["create_run", "dump_products", "preprocess", "model.train", "model.evaluate",
             "model.predict", "publish_predictions", "record_run_stats"]
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    baseline = dag.get_task("train_and_evaluate_baseline")
    assert "preprocess" in baseline.upstream_task_ids
    assert "record_run_stats" in baseline.downstream_task_ids


def test_catalog_train_is_scheduled_and_has_a_trigger_form(dagbag):
    dag = dagbag.dags["catalog_train"]
    assert dag.timetable.expression == "0 0 * * 0"  # @weekly
    for name in ("run_id", "objectives", "epochs", "model_type"):
        assert dag.params.get_param(name).description or dag.params.get_param(name).schema.get("title")
    assert dag.params["model_type"] == "ssl_gan"
    assert dag.params["baseline_model_type"] == "dnn"
    assert dag.doc_md
