import json
import sys

import pytest

from prodcat_airflow import stages
from shared_config.paths import InvalidId


def test_requested_run_id_is_validated():
    assert stages.run_id_for("my-run", "ignored") == "my-run"
    with pytest.raises(InvalidId):
        stages.run_id_for("../../etc", "manual__x")


def test_run_id_is_derived_from_airflow_run_id_when_not_given():
    derived = stages.run_id_for("", "manual__2026-11-21T10:00:00.123+00:00")
    assert derived == "manual__2026-11-21T10-00-00.123-00-00"


def test_trainer_flags_follow_the_params():
    flags = stages.trainer_flags({"model_type": "linear", "objectives": ["exclusive"],
                                  "epochs": 3, "batch_size": 32})
    assert flags == ["--model-type", "linear", "--objectives", "exclusive", "--epochs", "3",
                     "--batch-size", "32"]


def test_run_stage_returns_the_result_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PRODCAT_ML_PYTHON", sys.executable)
    module = tmp_path / "fake_stage.py"
    module.write_text("print('working'); print('PRODCAT_RESULT {\"count\": 3}')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert stages.run_stage("fake_stage") == {"count": 3}


def test_a_failing_stage_raises_with_its_last_lines(monkeypatch, tmp_path):
    monkeypatch.setenv("PRODCAT_ML_PYTHON", sys.executable)
    (tmp_path / "broken_stage.py").write_text("import sys; print('bad input: x'); sys.exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(stages.StageFailed, match="code 3(.|\n)*bad input: x"):
        stages.run_stage("broken_stage")


def test_the_result_also_goes_to_the_result_file_when_asked(monkeypatch, tmp_path, capsys):
    from shared_config.cli import emit_result, parse_result

    target = tmp_path / "xcom" / "return.json"
    monkeypatch.setenv("PRODCAT_RESULT_FILE", str(target))
    emit_result({"hparams_id": "ssl_gan-abc"})
    assert json.loads(target.read_text()) == {"hparams_id": "ssl_gan-abc"}
    assert parse_result(capsys.readouterr().out) == {"hparams_id": "ssl_gan-abc"}


def test_a_stage_s_noise_goes_to_its_log_file_and_the_task_log_stays_short(monkeypatch, tmp_path,
                                                                          caplog):
    monkeypatch.setenv("PRODCAT_ML_PYTHON", sys.executable)
    monkeypatch.setenv("PRODCAT_STAGE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("PRODCAT_STAGE_TIMINGS", str(tmp_path / "timings.jsonl"))
    monkeypatch.delenv("PRODCAT_VERBOSE", raising=False)
    (tmp_path / "noisy_stage.py").write_text(
        "import sys\n"
        "for i in range(500): print(f'I0000 tensorflow chatter {i}', file=sys.stderr)\n"
        "print('PRODCAT_PROGRESS noisy: 50 of 100 products, 10/s, about 5 s left', file=sys.stderr)\n"
        "print('2026-11-21 10:00:00,000 prodcat.noisy WARNING 2 products skipped', file=sys.stderr)\n"
        "print('PRODCAT_RESULT {\"products\": 100, \"peak_rss_mib\": 321.0}')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with caplog.at_level("INFO", logger=stages.log.name):
        assert stages.run_stage("noisy_stage", "--run-id", "r1")["products"] == 100
    shown = [record.getMessage() for record in caplog.records]
    assert not any("chatter" in line for line in shown)
    assert any(line.startswith("PRODCAT_PROGRESS noisy: 50 of 100") for line in shown)
    assert any("prodcat.noisy WARNING 2 products skipped" in line for line in shown)
    summary = [line for line in shown if line.startswith("PRODCAT_STAGE ")]
    assert len(summary) == 1 and "noisy_stage: done in" in summary[0]
    assert "peak 321 MiB" in summary[0] and "products=100" in summary[0]
    assert len(shown) <= 5
    (log_file,) = (tmp_path / "logs").glob("r1-noisy_stage-*.log")
    assert log_file.read_text().count("chatter") == 500
    timing = json.loads((tmp_path / "timings.jsonl").read_text())
    assert timing["stage"] == "noisy_stage" and timing["peak_rss_mib"] == 321.0
    assert timing["seconds"] > 0


def test_verbose_shows_every_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PRODCAT_ML_PYTHON", sys.executable)
    monkeypatch.setenv("PRODCAT_STAGE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("PRODCAT_VERBOSE", "1")
    (tmp_path / "chatty.py").write_text("print('I0000 chatter'); print('PRODCAT_RESULT {}')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with caplog.at_level("INFO", logger=stages.log.name):
        stages.run_stage("chatty")
    assert any("chatter" in record.getMessage() for record in caplog.records)


def test_the_timing_line_holds_the_stage_s_cpu_time(monkeypatch, tmp_path):
    monkeypatch.setenv("PRODCAT_ML_PYTHON", sys.executable)
    monkeypatch.setenv("PRODCAT_STAGE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("PRODCAT_STAGE_TIMINGS", str(tmp_path / "timings.jsonl"))
    (tmp_path / "busy_stage.py").write_text(
        "import time\n"
        "end = time.process_time() + 0.6\n"
        "while time.process_time() < end: pass\n"
        "print('PRODCAT_RESULT {\"done\": 1}')\n")
    (tmp_path / "idle_stage.py").write_text(
        "import time\ntime.sleep(0.6)\nprint('PRODCAT_RESULT {\"done\": 1}')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    stages.run_stage("busy_stage", "--run-id", "r1")
    stages.run_stage("idle_stage", "--run-id", "r1")
    busy, idle = (json.loads(line) for line in
                  (tmp_path / "timings.jsonl").read_text().splitlines())
    assert busy["cpu_seconds"] >= 0.6
    assert idle["cpu_seconds"] < 0.5 and idle["seconds"] >= 0.6
