"""The Airflow assets the DAGs pass between them, defined once."""
from __future__ import annotations

from airflow.sdk import Asset

# Updated by catalog_train once a run is recorded, its event's extra naming the run
# ({"run_id": ...}); catalog_label_selection is scheduled on it.
TRAINED_RUN = Asset(uri="prodcat://catalog_train/trained", name="prodcat_trained_run")
