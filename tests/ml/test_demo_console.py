"""What the demo shows of a DAG's output: quiet by default, everything with --verbose."""
import io

from local_stack.demo import Console

LINES = [
    "[2026-11-21T10:00:00] INFO - Task started [airflow.task] loc=task_runner.py:1",
    "I0000 00:00:1795305492 cudart_stub.cc:31] Could not find cuda drivers",
    ("PRODCAT_PROGRESS train ssl_gan: 5,000 of 20,000 rows, 9,000/s, about 2 s left"
     " [prodcat_airflow.stages] loc=stages.py:98"),
    ("PRODCAT_STAGE trainer.controller train: done in 12.0 s, peak 900 MiB; epochs=3"
     " [prodcat_airflow.stages] loc=stages.py:101"),
]


def test_quiet_console_shows_only_progress_and_results_without_airflow_s_suffix(tmp_path):
    out = io.StringIO()
    console = Console(False, tmp_path, stream=out)
    for line in LINES:
        console.show(line)
    shown = out.getvalue().splitlines()
    assert shown == ["  train ssl_gan: 5,000 of 20,000 rows, 9,000/s, about 2 s left",
                     "  trainer.controller train: done in 12.0 s, peak 900 MiB; epochs=3"]


def test_verbose_console_shows_every_line(tmp_path):
    out = io.StringIO()
    console = Console(True, tmp_path, stream=out)
    for line in LINES:
        console.show(line)
    assert out.getvalue().splitlines() == LINES
