"""Every DAG file imports cleanly, in the slim Airflow environment (no TensorFlow)."""
from __future__ import annotations

import itertools
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
    for upstream, downstream in itertools.pairwise(order):
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


class _CreatedRun:
    """Stands in for the task instance when rendering templates: create_run's XCom."""

    @staticmethod
    def xcom_pull(task_ids):
        return {"create_run": "run-7"}[task_ids]


def test_training_goes_to_a_gpu_pod_when_asked(monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    monkeypatch.setenv("PRODCAT_TRAIN_ON", "kubernetes")
    monkeypatch.setenv("PRODCAT_TRAINER_GPUS", "2")
    monkeypatch.setenv("PRODCAT_PREFIX", "gs://bucket/prodcat")
    monkeypatch.delenv("PRODCAT_FEATURE_CONFIG", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    dag = DagBag(dag_folder=str(DAGS)).dags["catalog_train"]
    train = dag.get_task("model.train")
    assert isinstance(train, KubernetesPodOperator)
    assert train.container_resources.limits == {"nvidia.com/gpu": "2"}
    assert train.do_xcom_push and train.image == "prodcat/trainer-gpu:latest"
    assert train.env_vars == {"PRODCAT_PREFIX": "gs://bucket/prodcat",
                   "PRODCAT_RESULT_FILE": "/airflow/xcom/return.json"}
    rendered = train.render_template(train.arguments, {"ti": _CreatedRun(), "params": {
        "model_type": "ssl_gan", "objectives": ["exclusive", "rule_based"], "epochs": 3,
        "batch_size": 64}})
    assert rendered == ["train", "--run-id", "run-7", "--model-type", "ssl_gan", "--objectives",
                        "exclusive,rule_based", "--epochs", "3", "--batch-size", "64"]
    assert {"model.evaluate", "model.predict"} <= train.downstream_task_ids
    assert "preprocess" in train.upstream_task_ids


def test_bad_gpu_settings_are_refused():
    from prodcat_airflow.gpu_training import train_on, train_pod

    with pytest.raises(ValueError, match="PRODCAT_TRAIN_ON='gpu'"):
        train_on({"PRODCAT_TRAIN_ON": "gpu"})
    with pytest.raises(ValueError, match="PRODCAT_TRAINER_GPUS='0'"):
        train_pod(env={"PRODCAT_TRAINER_GPUS": "0"})


def test_publishing_is_retried_since_it_resumes(dagbag):
    assert dagbag.dags["catalog_train"].get_task("publish_predictions").retries == 2


@pytest.mark.parametrize("conf", [
    {"run_id": "../../etc"}, {"run_id": "abc\n"}, {"run_id": "a..b"}, {"run_id": ".hidden"},
    {"run_id": "x" * 129}, {"run_id": "white space"}, {"objectives": []},
    {"objectives": ["exclusive", "exclusive"]}, {"objectives": ["sentiment"]},
])
def test_a_bad_trigger_is_refused_before_a_run_is_queued(dagbag, conf):
    """The checks the trigger form and the REST API make on a run's conf."""
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["catalog_train"].params)
    with pytest.raises(ParamValidationError):
        params.update(conf)
        params.validate()


@pytest.mark.parametrize("conf", [{}, {"run_id": ""}, {"run_id": "weekly-2026.11:21+a=b_c"},
                                  {"objectives": ["rule_based"]}])
def test_a_good_trigger_is_accepted(dagbag, conf):
    import copy

    params = copy.deepcopy(dagbag.dags["catalog_train"].params)
    params.update(conf)
    params.validate()


def test_label_selection_follows_each_trained_run_through_an_asset(dagbag):
    from prodcat_airflow.assets import TRAINED_RUN

    selection = dagbag.dags["catalog_label_selection"]
    assert TRAINED_RUN in selection.timetable.asset_condition.objects
    assert TRAINED_RUN in dagbag.dags["catalog_train"].get_task("record_run_stats").outlets
    order = ["resolve_run", "select.score", "select.choose", "select.queue", "record_stats"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in selection.get_task(upstream).downstream_task_ids
    assert selection.params["strategy"] == "density" and selection.doc_md
    with pytest.raises(Exception, match="strategy"):
        selection.params.update({"strategy": "psychic"})
    with pytest.raises(Exception, match="diversity_weight"):
        selection.params.update({"diversity_weight": 1.5})


def test_similarity_follows_each_trained_run_and_checks_its_form(dagbag):
    from prodcat_airflow.assets import TRAINED_RUN

    similarity = dagbag.dags["catalog_similarity"]
    assert TRAINED_RUN in similarity.timetable.asset_condition.objects
    order = ["resolve_run", "similarity.embed", "similarity.neighbours", "similarity.publish",
             "record_stats"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in similarity.get_task(upstream).downstream_task_ids
    assert similarity.get_task("similarity.publish").retries == 2
    assert similarity.params["k"] == 100 and similarity.params["level"] == 2
    for bad in ({"k": 0}, {"k": 5000}, {"level": -1}, {"index": "lsh"}, {"run_id": "../x"}):
        with pytest.raises(Exception, match=next(iter(bad))):
            similarity.params.update(bad)
