import gzip
import json
import threading

import pika
import pytest

from broker.publish import publish
from broker.topology import connect, dead_letter_names
from broker.updater import Updater
from shared_config import storage
from shared_config.paths import RunPaths
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products


def write_predictions(paths: RunPaths, ids):
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "wb") as raw, \
            gzip.open(raw, "wt") as out:
        for product_id in ids:
            out.write(json.dumps({"id": product_id, "run_id": paths.run_id, "model": "m",
                                  "exclusive": {"category": "shoes > boots", "score": 0.9,
                                                "path": ["shoes", "boots"]}}) + "\n")


@pytest.fixture
def loaded_store(broker_settings):
    store = ProductStore.from_settings(broker_settings)
    load_products(store, demo_catalog.generate(120), recreate=True)
    return store


def test_published_predictions_reach_the_store(broker_settings, loaded_store):
    paths = RunPaths.for_run("run-a")
    ids = [f"demo-{i:07d}" for i in range(120)]
    write_predictions(paths, ids)
    assert publish(paths, broker_settings)["published"] == 120
    result = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert result == {"applied": 120, "dead_lettered": 0}
    loaded_store.refresh()
    assert loaded_store.count({"term": {"prediction_run_id": "run-a"}}) == 120
    doc = loaded_store.get("demo-0000042")
    assert doc["prediction"]["exclusive"]["path"] == ["shoes", "boots"]
    assert doc["title"]  # a partial update keeps the product's own fields


def test_bad_messages_and_unknown_products_are_dead_lettered(broker_settings, loaded_store):
    connection = connect(broker_settings.amqp_url)
    channel = connection.channel()
    queue = broker_settings.predictions_queue
    from broker.topology import declare_predictions_queue
    declare_predictions_queue(channel, queue)
    good = {"id": "demo-0000001", "run_id": "run-b", "model": "m"}
    for body in (b"{not json", json.dumps({"id": "ghost", "run_id": "run-b"}).encode(),
                 json.dumps(good).encode()):
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    connection.close()
    result = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert result == {"applied": 1, "dead_lettered": 2}
    connection = connect(broker_settings.amqp_url)
    channel = connection.channel()
    reasons = []
    for _ in range(2):
        method, properties, _ = channel.basic_get(dead_letter_names(queue)[1], auto_ack=True)
        assert method is not None
        reasons.append(properties.headers["x-prodcat-reason"])
    connection.close()
    assert any("not JSON" in r for r in reasons) and any("missing" in r for r in reasons)
    loaded_store.refresh()
    assert loaded_store.get("demo-0000001")["prediction_run_id"] == "run-b"


def test_updater_stops_cleanly_and_leaves_nothing_unacknowledged(broker_settings, loaded_store):
    paths = RunPaths.for_run("run-c")
    write_predictions(paths, [f"demo-{i:07d}" for i in range(120)])
    publish(paths, broker_settings)
    updater = Updater(loaded_store, broker_settings)
    threading.Timer(0.2, updater.stop).start()
    first = updater.run()
    rest = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert first["applied"] + rest["applied"] == 120
    loaded_store.refresh()
    assert loaded_store.count({"term": {"prediction_run_id": "run-c"}}) == 120
