"""Conventions shared by the stages' command-line entry points.

Each stage prints progress on stderr and, last, one ``PRODCAT_RESULT {json}``
line on stdout: Airflow's stage runner turns that line into the task's XCom, and
the same JSON is kept under the run's ``stats/`` directory.
"""
from __future__ import annotations

import json
import logging
import os
import sys

RESULT_MARKER = "PRODCAT_RESULT "


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)


def finish_stage(paths, stage: str, result: dict) -> None:
    """Keep a stage's result under the run's ``stats/`` and print it."""
    from shared_config import storage

    storage.write_json(paths.stats_file(stage), result)
    emit_result(result)


def emit_result(result: dict) -> None:
    """Print the result line; also write it to ``PRODCAT_RESULT_FILE`` when set (the file
    a KubernetesPodOperator's XCom sidecar reads)."""
    text = json.dumps(result, sort_keys=True, default=str)
    sys.stdout.write(RESULT_MARKER + text + "\n")
    sys.stdout.flush()
    result_file = os.environ.get("PRODCAT_RESULT_FILE")
    if result_file:
        os.makedirs(os.path.dirname(os.path.abspath(result_file)), exist_ok=True)
        with open(result_file, "w", encoding="utf-8") as out:
            out.write(text)


def parse_result(output: str) -> dict:
    """The result JSON from a stage's output; raise if the stage printed none."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise ValueError("the stage printed no result line")


def run_paths(parser, run_id: str):
    """The run's paths, or a usage error (exit 2, nothing written) for a bad id or prefix."""
    from shared_config.paths import RunPaths

    try:
        return RunPaths.for_run(run_id)
    except ValueError as err:
        parser.error(str(err))
