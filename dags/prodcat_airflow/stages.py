"""Run a prodcat stage through its command-line entry point in the ML environment.

The Airflow environment stays slim (no TensorFlow): each ML stage runs as
``<ml python> -m <module> ...`` in a subprocess, the very command the Docker and
Kubernetes operators run in production. The stage's log lines go to the task
log; its ``PRODCAT_RESULT`` line becomes the task's return value (XCom).
"""
from __future__ import annotations

import collections
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

from shared_config.cli import parse_result
from shared_config.paths import validate_id

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class StageFailed(RuntimeError):
    """A stage's command exited with an error; the message ends with its last lines."""


def ml_python() -> str:
    return os.environ.get("PRODCAT_ML_PYTHON") or str(REPO_ROOT / ".venvs" / "ml" / "bin" / "python")


def stage_command(module: str, *args: str) -> list[str]:
    return [ml_python(), "-m", module, *args]


def run_stage(module: str, *args: str) -> dict:
    command = stage_command(module, *args)
    log.info("running %s", shlex.join(command))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    tail: collections.deque[str] = collections.deque(maxlen=30)
    output: list[str] = []
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            line = line.rstrip("\n")
            log.info("%s", line)
            tail.append(line)
            if line.startswith("PRODCAT_RESULT "):
                output.append(line)
    if process.returncode != 0:
        raise StageFailed(f"{module} exited with code {process.returncode}; last lines:\n"
                          + "\n".join(tail))
    return parse_result("\n".join(output))


def run_id_for(requested: str, dag_run_id: str) -> str:
    """The requested run id, validated, or one derived from Airflow's own run id."""
    if requested:
        return validate_id(requested, "run_id")
    return validate_id(_UNSAFE.sub("-", dag_run_id).strip("-.")[:128], "run_id")


def trainer_flags(params: dict, model_type: str | None = None) -> list[str]:
    return ["--model-type", str(model_type or params["model_type"]),
            "--objectives", ",".join(params["objectives"]),
            "--epochs", str(params["epochs"]),
            "--batch-size", str(params["batch_size"])]


def record_run(run: str) -> dict:
    """Gather every stage's figures into the run's statistics, then index them in the store's
    runs index for the UIs; the statistics as recorded."""
    recorded = run_stage("shared_config.runs", "record-stats", "--run-id", run)
    run_stage("store.run_stats", "--run-id", run)
    return recorded
