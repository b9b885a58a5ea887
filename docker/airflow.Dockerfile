# Airflow 3 image for every Airflow service. The DAGs run each ML stage with the
# ML environment's Python (PRODCAT_ML_PYTHON), installed here as a separate venv
# so Airflow's own dependencies never meet TensorFlow's.
FROM apache/airflow:3.3.2-python3.11

ENV PYTHONPATH=/opt/prodcat \
    PRODCAT_ML_PYTHON=/opt/venvs/ml/bin/python \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/prodcat/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/prodcat/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

COPY --chown=airflow:0 requirements/ml.lock.txt /opt/prodcat/requirements/ml.lock.txt
RUN python -m venv /opt/venvs/ml \
    && /opt/venvs/ml/bin/pip install --no-cache-dir --requirement /opt/prodcat/requirements/ml.lock.txt

# The labelling UI (a plugin of the api-server, and the compose service "ui") talks to
# the store from Airflow's own environment: the store clients, pinned as in airflow.lock.txt.
RUN pip install --no-cache-dir opensearch-py==3.2.0 elasticsearch==9.5.1

# What runs in this image; tests/airflow/test_docker_stack.py checks that every package
# these modules import (however deep) is copied below.
LABEL org.prodcat.entrypoints="catalog_train shared_config.runs store.dump store.run_stats beam_pipelines.preprocess trainer.controller trainer.peer broker.publish active_learning.select similarity.neighbours webui plugins.prodcat_ui webui.users"
COPY --chown=airflow:0 shared_config /opt/prodcat/shared_config
COPY --chown=airflow:0 store /opt/prodcat/store
COPY --chown=airflow:0 broker /opt/prodcat/broker
COPY --chown=airflow:0 beam_pipelines /opt/prodcat/beam_pipelines
COPY --chown=airflow:0 trainer /opt/prodcat/trainer
COPY --chown=airflow:0 active_learning /opt/prodcat/active_learning
COPY --chown=airflow:0 similarity /opt/prodcat/similarity
COPY --chown=airflow:0 dags /opt/prodcat/dags
COPY --chown=airflow:0 webui /opt/prodcat/webui
COPY --chown=airflow:0 plugins /opt/prodcat/plugins
