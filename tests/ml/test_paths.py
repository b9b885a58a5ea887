import pytest

from shared_config import runs, storage
from shared_config.paths import InvalidId, RunPaths, normalise_prefix, validate_id
from shared_config.settings import Settings


def test_local_prefix_resolves_every_template(tmp_path):
    paths = RunPaths.for_run("r1", str(tmp_path))
    assert paths.run_dir == f"{tmp_path}/runs/r1"
    assert paths.dump_dir == f"{tmp_path}/runs/r1/dump/"
    assert paths.tfrecords("exclusive", "train") == f"{tmp_path}/runs/r1/tfrecords/exclusive_train.tfrecords"
    assert paths.tfrecord_files("catalog", "test") == f"{tmp_path}/runs/r1/tfrecords/catalog_test.tfrecords-*"
    assert paths.transform_fn_dir == f"{tmp_path}/runs/r1/transform_fn/"
    assert paths.checkpoints("dnn-1") == f"{tmp_path}/runs/r1/checkpoints/dnn-1/"
    assert paths.predictions_dir == f"{tmp_path}/runs/r1/predictions/"


def test_relative_local_prefix_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalise_prefix("data/") == str(tmp_path / "data")


def test_gcs_prefix_keeps_its_scheme():
    paths = RunPaths.for_run("r1", "gs://bucket/some/path/")
    assert paths.is_remote
    assert paths.tfrecords("rule_based", "valid") == (
        "gs://bucket/some/path/runs/r1/tfrecords/rule_based_valid.tfrecords")
    assert paths.checkpoints("h") == "gs://bucket/some/path/runs/r1/checkpoints/h/"
    assert paths.local_dirs() == []


def test_prefix_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PRODCAT_PREFIX", "gs://b/p")
    assert RunPaths.for_run("r").run_dir == "gs://b/p/runs/r"
    assert Settings.from_env().prefix == "gs://b/p"


@pytest.mark.parametrize("prefix", ["", "   ", "gs://", "s3://bucket/x"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(ValueError):
        normalise_prefix(prefix)


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a..b", "../etc", "a b", "tab\tid", "new\nline",
                                 "abc\n", "ok\r",
                                 ".hidden", "nul\x00", "back\\slash", "x" * 129, "é"])
def test_unsafe_ids_are_rejected(bad):
    with pytest.raises(InvalidId):
        validate_id(bad, "run_id")
    with pytest.raises(InvalidId):
        RunPaths.for_run(bad, "/tmp/unused")
    with pytest.raises(InvalidId):
        RunPaths.for_run("ok", "/tmp/unused").checkpoints(bad)


@pytest.mark.parametrize("good", ["r1", "demo-20261121T101500", "manual__2026-11-21T10-00-00", "a.b_c=d+e:f"])
def test_safe_ids_are_accepted(good):
    assert validate_id(good) == good


def test_unknown_objective_or_split_is_refused(tmp_path):
    with pytest.raises(ValueError):
        RunPaths.for_run("r", str(tmp_path)).tfrecords("exclusive", "holdout")


def test_creating_a_run_with_a_bad_id_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRODCAT_PREFIX", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        runs.main(["create", "--run-id", "../escape"])
    assert exit_info.value.code == 2
    assert "not allowed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_create_run_then_record_stats(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRODCAT_PREFIX", str(tmp_path))
    runs.main(["create", "--run-id", "r1", "--params", '{"epochs": 3}'])
    paths = RunPaths.for_run("r1")
    assert storage.read_json(paths.manifest)["params"] == {"epochs": 3}
    storage.write_json(paths.stats_file("dump"), {"products": 5})
    runs.main(["record-stats", "--run-id", "r1"])
    assert storage.read_json(paths.stats_file("run"))["stages"] == {"dump": {"products": 5}}


def test_a_baseline_never_shares_the_models_directory(tmp_path):
    paths = RunPaths.for_run("r1", str(tmp_path))
    assert paths.checkpoints("dnn-1", "baseline") != paths.checkpoints("dnn-1")
    assert paths.checkpoints("dnn-1", "baseline").startswith(paths.run_dir + "/checkpoints/")
    with pytest.raises(ValueError):
        paths.checkpoints("dnn-1", "teacher")


@pytest.mark.parametrize("url, shown", [
    ("amqp://prodcat:s3cret@broker:5672/%2F", "amqp://prodcat:***@broker:5672/%2F"),
    ("http://elastic:pw@es:9200", "http://elastic:***@es:9200"),
    ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
])
def test_credentials_are_masked_wherever_a_url_is_shown(url, shown):
    from shared_config.settings import mask_url

    assert mask_url(url) == shown


def test_the_local_stack_logs_its_urls_without_passwords(monkeypatch, caplog):
    from local_stack import up
    from shared_config.settings import Settings

    settings = Settings.from_env({"PRODCAT_AMQP_URL": "amqp://u:hunter2@127.0.0.1:5672/%2F"})
    assert "hunter2" not in up.describe(settings) and "u:***@" in up.describe(settings)


def test_image_sources_come_from_the_settings(tmp_path):
    from shared_config.settings import Settings

    settings = Settings.from_env({"PRODCAT_IMAGE_ROOTS": f"{tmp_path}/a:{tmp_path}/b",
                                  "PRODCAT_IMAGE_ALLOWED_NETWORKS": "10.0.0.0/8, 127.0.0.1"})
    assert settings.image_roots == (f"{tmp_path}/a", f"{tmp_path}/b")
    assert settings.image_allowed_networks == ("10.0.0.0/8", "127.0.0.1")
    assert Settings.from_env(settings.as_env()) == settings
    assert Settings.from_env({"PRODCAT_DATA_DIR": str(tmp_path)}).image_roots == (str(tmp_path),)
