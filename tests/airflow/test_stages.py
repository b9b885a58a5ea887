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
