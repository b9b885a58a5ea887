"""Run files under a ``gs://`` prefix, against a GCS emulator (gcp-storage-emulator)."""
from __future__ import annotations

import gzip
import json
import logging

import pytest
from gcp_storage_emulator.server import create_server

from shared_config import storage
from shared_config.paths import RunPaths
from tests.helpers import free_port

BUCKET = "prodcat-test"


@pytest.fixture(scope="module")
def gcs_emulator():
    logging.getLogger("gcsfs").setLevel(logging.ERROR)  # no credentials: expected here
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        yield
    server.stop()


def test_json_round_trip_and_glob_under_gs_prefix(gcs_emulator):
    paths = RunPaths.for_run("r1", f"gs://{BUCKET}/prefix")
    storage.write_json(paths.stats_file("dump"), {"products": 3})
    storage.write_json(paths.stats_file("publish"), {"published": 3})
    assert storage.read_json(paths.stats_file("dump")) == {"products": 3}
    assert storage.glob(paths.stats_dir + "*.json") == [
        f"gs://{BUCKET}/prefix/runs/r1/stats/dump.json",
        f"gs://{BUCKET}/prefix/runs/r1/stats/publish.json"]


def test_sharded_writer_uploads_every_shard(gcs_emulator):
    paths = RunPaths.for_run("r2", f"gs://{BUCKET}/prefix")
    with storage.ShardedJsonlWriter(paths.dump_dir, per_shard=4) as writer:
        for i in range(10):
            writer.write({"id": f"p{i}"})
    files = storage.glob(paths.dump_dir + "part-*.jsonl.gz")
    assert len(files) == writer.shards == 3
    ids = []
    for path in files:
        with storage.open_file(path, "rb") as raw, gzip.open(raw, "rt") as lines:
            ids += [json.loads(line)["id"] for line in lines]
    assert ids == [f"p{i}" for i in range(10)]
