"""Run a prodcat stage through its command-line entry point in the ML environment.

The Airflow environment stays slim (no TensorFlow): each ML stage runs as
``<ml python> -m <module> ...`` in a subprocess, the very command the Docker and
Kubernetes operators run in production. Its whole output (TensorFlow, absl and
Beam included) goes to a log file of its own, whose path the task log names; the
task log itself shows the stage's progress lines, prodcat's warnings and errors,
and one line with its result (``PRODCAT_VERBOSE=1`` shows everything there too).
Its ``PRODCAT_RESULT`` line becomes the task's return value (XCom); with
``PRODCAT_STAGE_TIMINGS`` set, each stage's wall time, CPU time and peak memory are appended
to that file as a JSON line (the end-to-end benchmark reads it).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import resource
import shlex
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from shared_config.cli import PROGRESS_MARKER, RESULT_MARKER, STAGE_MARKER, parse_result
from shared_config.paths import validate_id

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")
# prodcat's own warnings and errors reach the task log; other libraries' stay in the file
_SHOWN = re.compile(r"^\S+ \S+ prodcat[.\w]* (WARNING|ERROR|CRITICAL) ")
SUMMARY_KEYS = 6  # result fields in the one-line summary


class StageFailed(RuntimeError):
    """A stage's command exited with an error; the message ends with its last lines."""


def ml_python() -> str:
    return os.environ.get("PRODCAT_ML_PYTHON") or str(REPO_ROOT / ".venvs" / "ml" / "bin" / "python")


def stage_command(module: str, *args: str) -> list[str]:
    return [ml_python(), "-m", module, *args]


def stage_log_dir() -> Path:
    return Path(os.environ.get("PRODCAT_STAGE_LOG_DIR") or REPO_ROOT / ".prodcat" / "logs" / "stages")


def _log_file(module: str, args: tuple[str, ...]) -> Path:
    run = args[args.index("--run-id") + 1] if "--run-id" in args[:-1] else ""
    verb = args[0] if args and not args[0].startswith("-") else ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = "-".join(_UNSAFE.sub("-", part) for part in (run, module, verb, stamp) if part)
    directory = stage_log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}-{os.getpid()}.log"


def summary_line(name: str, seconds: float, result: dict) -> str:
    """``name: done in 12 s, peak 900 MiB; key=value, ...`` (a few scalar result fields)."""
    shown = [f"{key}={value}" for key, value in result.items()
             if isinstance(value, (int, float, str)) and not isinstance(value, bool)
             and key not in ("peak_rss_mib", "run_id") and "/" not in str(value)
             and len(str(value)) <= 32][:SUMMARY_KEYS]
    peak = f", peak {result['peak_rss_mib']:,.0f} MiB" if "peak_rss_mib" in result else ""
    return f"{name}: done in {seconds:,.1f} s{peak}; " + ", ".join(shown)


def _children_cpu_seconds() -> float:
    """User and system CPU time of this process's finished children (a stage's, once waited
    for: the difference around one stage is its own while stages run one at a time here)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stage(module: str, *args: str) -> dict:
    command = stage_command(module, *args)
    verbose = os.environ.get("PRODCAT_VERBOSE", "") not in ("", "0")
    log_path = _log_file(module, args)
    name = " ".join([module] + ([args[0]] if args and not args[0].startswith("-") else []))
    log.info("running %s (full output: %s)", shlex.join(command), log_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    tail: collections.deque[str] = collections.deque(maxlen=30)
    output: list[str] = []
    started, cpu_before = time.monotonic(), _children_cpu_seconds()
    with open(log_path, "w", encoding="utf-8") as log_file, subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1) as process:
        for line in process.stdout:
            log_file.write(line)
            line = line.rstrip("\n")
            tail.append(line)
            if line.startswith(RESULT_MARKER):
                output.append(line)
            elif verbose or _SHOWN.match(line):
                log.info("%s", line)
            elif line.startswith(PROGRESS_MARKER):
                log.info("%s%s", PROGRESS_MARKER, line[len(PROGRESS_MARKER):])
    seconds = time.monotonic() - started
    cpu_seconds = _children_cpu_seconds() - cpu_before
    if process.returncode != 0:
        raise StageFailed(f"{module} exited with code {process.returncode} (full output: "
                          f"{log_path}); last lines:\n" + "\n".join(tail))
    result = parse_result("\n".join(output))
    log.info("%s%s", STAGE_MARKER, summary_line(name, seconds, result))
    timings = os.environ.get("PRODCAT_STAGE_TIMINGS")
    if timings:
        with open(timings, "a", encoding="utf-8") as out:
            out.write(json.dumps({"stage": name, "args": list(args), "seconds": round(seconds, 2),
                                  "peak_rss_mib": result.get("peak_rss_mib"),
                                  "cpu_seconds": round(cpu_seconds, 2),
                                  "finished_at": time.time(), "result": result},
                                 default=str) + "\n")
    return result


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
