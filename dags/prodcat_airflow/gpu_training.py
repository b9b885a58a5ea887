"""Where ``catalog_train`` trains: in the ML environment beside Airflow, or in a GPU pod.

``PRODCAT_TRAIN_ON=kubernetes`` hands the ``train`` task to a KubernetesPodOperator
running the GPU trainer image (``docker/trainer-gpu.Dockerfile``, whose entry point
is ``python -m trainer.controller``) with a GPU request; every other stage stays
as it is. The pod needs the run's files, so ``PRODCAT_PREFIX`` must be shared
storage (``gs://...``) there. The controller writes its result to the file the
operator's XCom sidecar reads, so later tasks get the ``hparams_id`` either way.

| variable | default | meaning |
|---|---|---|
| ``PRODCAT_TRAIN_ON`` | ``local`` | ``local`` or ``kubernetes`` |
| ``PRODCAT_TRAINER_IMAGE`` | ``prodcat/trainer-gpu:latest`` | the pod's image |
| ``PRODCAT_TRAINER_GPUS`` | ``1`` | GPUs requested (several: MirroredStrategy) |
| ``PRODCAT_KUBERNETES_NAMESPACE`` | ``prodcat`` | the pod's namespace |
"""
from __future__ import annotations

import os

from prodcat_airflow.stages import trainer_flags

TRAIN_ON = ("local", "kubernetes")
XCOM_RESULT_FILE = "/airflow/xcom/return.json"  # where the operator's sidecar reads XCom
# Settings the trainer needs, passed on from Airflow's environment to the pod.
FORWARDED_SETTINGS = ("PRODCAT_PREFIX", "PRODCAT_FEATURE_CONFIG", "STORAGE_EMULATOR_HOST")
RUN_ID = "{{ ti.xcom_pull(task_ids='create_run') }}"
# The local task's flags, as templates Airflow renders from the trigger form.
HYPERPARAMETER_FLAGS = trainer_flags({
    "model_type": "{{ params.model_type }}", "objectives": ["{{ params.objectives | join(',') }}"],
    "epochs": "{{ params.epochs }}", "batch_size": "{{ params.batch_size }}"})


def train_on(env=None) -> str:
    value = (os.environ if env is None else env).get("PRODCAT_TRAIN_ON", "local")
    if value not in TRAIN_ON:
        raise ValueError(f"PRODCAT_TRAIN_ON={value!r}: use one of {TRAIN_ON}")
    return value


def train_pod(task_id: str = "train", env=None):
    """A KubernetesPodOperator that runs ``trainer.controller train`` on a GPU."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    env = os.environ if env is None else env
    gpus = env.get("PRODCAT_TRAINER_GPUS", "1")
    if not gpus.isdigit() or int(gpus) < 1:
        raise ValueError(f"PRODCAT_TRAINER_GPUS={gpus!r}: a whole number of GPUs, at least 1")
    forwarded = {name: env[name] for name in FORWARDED_SETTINGS if name in env}
    return KubernetesPodOperator(
        task_id=task_id,
        name="prodcat-train",
        namespace=env.get("PRODCAT_KUBERNETES_NAMESPACE", "prodcat"),
        image=env.get("PRODCAT_TRAINER_IMAGE", "prodcat/trainer-gpu:latest"),
        arguments=["train", "--run-id", RUN_ID, *HYPERPARAMETER_FLAGS],
        env_vars={**forwarded, "PRODCAT_RESULT_FILE": XCOM_RESULT_FILE},
        container_resources=k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": gpus}),
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
    )
