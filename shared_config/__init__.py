"""Configuration shared by every prodcat stage: run paths, settings and features.

Airflow tasks, the Beam job, the trainer and the broker stages all import this
package, so it must stay free of heavy dependencies (no TensorFlow, no Beam).
"""
