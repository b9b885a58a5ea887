# GPU trainer image: `python -m trainer.controller ...` on TensorFlow's GPU image.
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/prodcat \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/prodcat
COPY requirements/ml.lock.txt requirements/ml.lock.txt
RUN pip install --no-cache-dir --requirement requirements/ml.lock.txt

# What runs in this image; tests/airflow/test_docker_stack.py checks that every package
# these modules import (however deep) is copied below.
LABEL org.prodcat.entrypoints="trainer.controller"
COPY shared_config shared_config
COPY beam_pipelines beam_pipelines
COPY trainer trainer
COPY similarity similarity

ENTRYPOINT ["python", "-m", "trainer.controller"]
CMD ["--help"]
