"""Helpers for prodcat's DAG files; importable without TensorFlow."""
