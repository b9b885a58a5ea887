# CPU worker image: the ML environment (Beam/TF Transform job, dump, publisher, updater).
# The same image serves as Beam's SDK container on cluster runners and as the
# image of a KubernetesPodOperator/DockerOperator running a stage's entry point.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/prodcat \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/prodcat
COPY requirements/ml.lock.txt requirements/ml.lock.txt
RUN pip install --no-cache-dir --requirement requirements/ml.lock.txt

# What runs in this image; tests/airflow/test_docker_stack.py checks that every package
# these modules import (however deep) is copied below.
LABEL org.prodcat.entrypoints="broker.updater broker.publish store.dump store.load store.run_stats beam_pipelines.preprocess trainer.controller trainer.peer shared_config.runs active_learning.select similarity.neighbours"
COPY shared_config shared_config
COPY store store
COPY broker broker
COPY beam_pipelines beam_pipelines
COPY trainer trainer
COPY active_learning active_learning
COPY similarity similarity

RUN useradd --create-home --uid 1000 prodcat
USER 1000:1000
CMD ["python", "-m", "broker.updater"]
