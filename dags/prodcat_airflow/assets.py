"""The Airflow assets the DAGs pass between them, defined once."""
from __future__ import annotations

from airflow.sdk import Asset

# Updated by catalog_train once a run is recorded, its event's extra naming the run
# ({"run_id": ...}); catalog_label_selection and catalog_similarity are scheduled on it.
TRAINED_RUN = Asset(uri="prodcat://catalog_train/trained", name="prodcat_trained_run")


def trained_run(requested: str, triggering_asset_events=None, inlet_events=None) -> str:
    """The run asked for; else the one whose trained-run event triggered this DAG run;
    else (a manual trigger) the latest trained run the asset knows."""
    if requested:
        return requested
    events = [e for found in (triggering_asset_events or {}).values() for e in found]
    if not events and inlet_events is not None:
        events = list(inlet_events[TRAINED_RUN])
    runs = [e.extra.get("run_id") for e in events if (e.extra or {}).get("run_id")]
    if not runs:
        raise ValueError("no run id given, and no catalog_train run has been recorded")
    return runs[-1]
