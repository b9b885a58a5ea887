"""Conventions shared by the stages' command-line entry points.

Each stage logs on stderr, prints a ``PRODCAT_PROGRESS`` line now and then (items
done, rate, time left: ``Progress``) and, last, one ``PRODCAT_RESULT {json}`` line
on stdout: Airflow's stage runner turns that line into the task's XCom, and the
same JSON (with the stage's peak memory) is kept under the run's ``stats/``
directory. The stage runner shows the progress lines and keeps the rest in a log
file per stage.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time

RESULT_MARKER = "PRODCAT_RESULT "
PROGRESS_MARKER = "PRODCAT_PROGRESS "
STAGE_MARKER = "PRODCAT_STAGE "  # the stage runner's one line per finished stage
PROGRESS_EVERY_SECONDS = 15.0


def peak_rss_mib() -> float:
    """The most memory this process, or any child it waited for, held at once (MiB)."""
    return round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)


class Progress:
    """One ``PRODCAT_PROGRESS`` line at most every ``every`` seconds: what a stage has done,
    its rate and, with a ``total``, the time left.

    ``Progress("predict", total=100_000, unit="products").update(done)``
    """

    def __init__(self, stage: str, total: int | None = None, unit: str = "products",
                 every: float = PROGRESS_EVERY_SECONDS, stream=None):
        self.stage, self.total, self.unit, self.every = stage, total, unit, every
        self.stream = stream or sys.stderr
        self.started = self._last = time.monotonic()

    def line(self, done: int) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        text = f"{self.stage}: {done:,}"
        if self.total:
            text += f" of {self.total:,}"
        text += f" {self.unit}, {rate:,.0f}/s"
        if self.total and rate > 0 and done < self.total:
            text += f", about {(self.total - done) / rate:,.0f} s left"
        return text

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            self.stream.write(PROGRESS_MARKER + self.line(done) + "\n")
            self.stream.flush()


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)


def finish_stage(paths, stage: str, result: dict) -> None:
    """Keep a stage's result under the run's ``stats/`` and print it."""
    from shared_config import storage

    result = {**result, "peak_rss_mib": peak_rss_mib()}
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
