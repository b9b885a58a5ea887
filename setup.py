"""Packages prodcat's code for Beam workers on cluster runners (``--setup_file ./setup.py``).

Dataflow, Flink and Spark workers install this package, so the job's modules
(``beam_pipelines``, ``shared_config``) import there as they do locally. Their
third-party dependencies come from ``requirements/ml.lock.txt`` (pass it as
``--requirements_file``) or, faster, from the ``docker/ml.Dockerfile`` image
(``--sdk_container_image``).
"""
import setuptools

setuptools.setup()  # the package list and data files are in pyproject.toml
