"""Run bookkeeping: create a run's directories and manifest; gather its statistics.

``python -m shared_config.runs create --run-id R --params '{...}' [--airflow-run-id A]``
``python -m shared_config.runs record-stats --run-id R``
"""
from __future__ import annotations

import argparse
import datetime as dt
import json

from shared_config import storage
from shared_config.cli import emit_result, run_paths, setup_logging
from shared_config.paths import RunPaths


def create_run(paths: RunPaths, params: dict, airflow_run_id: str | None = None) -> dict:
    for directory in paths.local_dirs():
        storage.makedirs(directory)
    manifest = {"run_id": paths.run_id, "prefix": paths.prefix, "params": params,
                "airflow_run_id": airflow_run_id,
                "created_at": dt.datetime.now(dt.UTC).isoformat()}
    storage.write_json(paths.manifest, manifest)
    return {"run_id": paths.run_id, "run_dir": paths.run_dir}


SETS_PER_RUN = 1000  # prediction sets one run may make


def run_version(paths: RunPaths) -> int:
    """The run's creation time in milliseconds: a later run's predictions win in the store."""
    if not storage.exists(paths.manifest):
        raise FileNotFoundError(f"no run manifest at {paths.manifest}: create the run first")
    created = dt.datetime.fromisoformat(storage.read_json(paths.manifest)["created_at"])
    return int(created.timestamp() * 1000)


def next_prediction_version(paths: RunPaths, counter: str | None = None) -> int:
    """The version of a new prediction set of this run: ``run_version * 1000 + n`` for the
    run's n-th set. So a re-predict in the same run (a cleared task, another model) is
    newer than the run's earlier sets and applies, while every set of an older run stays
    older than every set of a newer one. ``counter``: the file that counts the sets (the
    predictions' by default; neighbour sets keep their own)."""
    counter = counter or paths.prediction_sets
    made = storage.read_json(counter)["sets"] if storage.exists(counter) else 0
    if made + 1 >= SETS_PER_RUN:
        raise RuntimeError(f"run {paths.run_id} made {made} sets already ({counter}): start a "
                           "new run")
    storage.write_json(counter, {"sets": made + 1})
    return run_version(paths) * SETS_PER_RUN + made + 1


def record_stats(paths: RunPaths) -> dict:
    """Merge every stage's stats file into ``stats/run.json``."""
    stages = {}
    for path in storage.glob(paths.stats_dir + "*.json"):
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
        if name != "run":
            stages[name] = storage.read_json(path)
    summary = {"run_id": paths.run_id, "run_dir": paths.run_dir, "stages": stages,
               "recorded_at": dt.datetime.now(dt.UTC).isoformat()}
    storage.write_json(paths.stats_file("run"), summary)
    return summary


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m shared_config.runs", description=__doc__)
    parser.add_argument("command", choices=("create", "record-stats"))
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--params", default="{}", help="the run's parameters as JSON")
    parser.add_argument("--airflow-run-id", help="the Airflow DAG run that made this run")
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    if args.command == "create":
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as err:
            parser.error(f"--params is not JSON: {err}")
        emit_result(create_run(paths, params, args.airflow_run_id))
    else:
        emit_result(record_stats(paths))


if __name__ == "__main__":
    main()
