"""Faults on the way from predictions to the store, against the real broker and store.

Each test ends with every prediction applied exactly once in effect: the right
count and content in the store, and every document written once (its version
went from 1 to 2: a duplicate delivery would have made it 3).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from broker.publish import publish
from broker.updater import Updater
from local_stack.stack import REPO_ROOT
from shared_config.paths import RunPaths
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products
from tests.helpers import TcpProxy
from tests.ml.test_broker import versions, write_predictions

PRODUCTS = 600


@pytest.fixture
def loaded_store(broker_settings):
    store = ProductStore.from_settings(broker_settings)
    load_products(store, demo_catalog.generate(PRODUCTS), recreate=True)
    return store


def product_ids(store: ProductStore) -> list[str]:
    return sorted(p["id"] for p in store.iter_products())


def publish_a_prediction_for_each(store: ProductStore, settings, run_id: str,
                                  workers: int) -> list[str]:
    ids = product_ids(store)
    paths = RunPaths.for_run(run_id)
    write_predictions(paths, ids)
    publish(paths, settings, workers=workers, per_message=10)
    return ids


def assert_applied_exactly_once(store: ProductStore, ids: list[str], run_id: str) -> None:
    store.refresh()
    assert store.count({"term": {"prediction_run_id": run_id}}) == len(ids)
    assert store.count({"term": {"prediction_path": "Shoes > Boots"}}) == len(ids)
    written = versions(store, ids)
    assert sorted(set(written.values())) == [2], {k: v for k, v in written.items() if v != 2}


def test_rabbitmq_restarted_in_the_middle_of_a_publish(broker_settings, loaded_store, rabbit):
    ids = product_ids(loaded_store)
    paths = RunPaths.for_run("fault-broker")
    write_predictions(paths, ids * 10)  # 6,000 messages of one: several seconds of publishing
    outcome = {}
    publisher = threading.Thread(target=lambda: outcome.update(
        publish(paths, broker_settings, workers=1, per_message=1, give_up_after=120)))
    publisher.start()
    time.sleep(1.0)
    assert publisher.is_alive(), "the publish ended before the broker could be stopped"
    rabbit.stop()
    time.sleep(1.0)
    rabbit.start()
    publisher.join(180)
    assert outcome["published"] >= 6000 and outcome["reconnects"] >= 1, outcome
    counts = Updater(loaded_store, broker_settings).run(exit_when_idle=2)
    assert counts["applied"] == PRODUCTS and counts["dead_lettered"] == 0
    # a message the broker took just before going down may come twice (its confirm was lost
    # and it was sent again): delivered at least once, applied once
    assert counts["applied"] + counts["already_applied"] >= outcome["published"]
    assert_applied_exactly_once(loaded_store, ids, "fault-broker")


def test_updater_killed_with_sigkill_and_started_again(broker_settings, loaded_store, tmp_path):
    ids = publish_a_prediction_for_each(loaded_store, broker_settings, "fault-kill", workers=2)
    env = {**os.environ, **broker_settings.as_env(), "PYTHONPATH": str(REPO_ROOT),
           "PRODCAT_UPDATER_MAX_DOCS_PER_SECOND": "200", "PRODCAT_UPDATER_BATCH_SIZE": "40"}
    command = [sys.executable, "-m", "broker.updater"]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once part of the run is in the store
            loaded_store.refresh()
            if loaded_store.count({"term": {"prediction_run_id": "fault-kill"}}) >= 100:
                break
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    loaded_store.refresh()
    before = loaded_store.count({"term": {"prediction_run_id": "fault-kill"}})
    assert 0 < before < PRODUCTS, before
    second = subprocess.run([*command, "--exit-when-idle", "2"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_applied_exactly_once(loaded_store, ids, "fault-kill")


def test_store_unreachable_for_a_while_during_updating(broker_settings, loaded_store, caplog):
    ids = publish_a_prediction_for_each(loaded_store, broker_settings, "fault-store", workers=1)
    proxy = TcpProxy(int(broker_settings.store_url.rsplit(":", 1)[1]))
    settings = dataclasses.replace(broker_settings, store_url=f"http://127.0.0.1:{proxy.port}",
                                   updater_max_docs_per_second=300, updater_batch_size=50)
    updater = Updater(ProductStore.from_settings(settings), settings)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(updater.run(exit_when_idle=2)))
    worker.start()
    time.sleep(0.5)
    proxy.cut()
    time.sleep(3)
    proxy.restore()
    worker.join(120)
    # a write the store took just as the path was cut lost its answer: retried, it finds itself
    # already there (already_applied); either way each product is written once
    assert outcome["applied"] + outcome["already_applied"] == PRODUCTS, outcome
    assert outcome["dead_lettered"] == 0, outcome
    assert any("store unavailable" in r.message for r in caplog.records)
    assert_applied_exactly_once(loaded_store, ids, "fault-store")


def test_the_updater_reconnects_when_the_broker_restarts(broker_settings, loaded_store, rabbit):
    ids = product_ids(loaded_store)
    paths = RunPaths.for_run("fault-updater-broker")
    write_predictions(paths, ids)
    assert publish(paths, broker_settings, workers=1, per_message=10)["published"] == PRODUCTS
    # slow enough (about 6 s for the 600) for the broker to go away in the middle
    slow = dataclasses.replace(broker_settings, updater_max_docs_per_second=100,
                               updater_batch_size=20)
    outcome = {}
    updater = threading.Thread(target=lambda: outcome.update(
        Updater(loaded_store, slow).run(exit_when_idle=3)))
    updater.start()
    time.sleep(1.5)
    assert updater.is_alive(), "the updater finished before the broker could be stopped"
    rabbit.stop()
    time.sleep(1.0)
    rabbit.start()
    updater.join(180)
    assert not updater.is_alive() and outcome["reconnects"] >= 1, outcome
    # what was applied but not acknowledged when the broker went (if anything) comes again and
    # is not applied twice; the versions below say each product was written once
    assert outcome["dead_lettered"] == 0, outcome
    assert outcome["applied"] + outcome["already_applied"] >= PRODUCTS, outcome
    assert_applied_exactly_once(loaded_store, ids, "fault-updater-broker")


def test_a_store_outage_longer_than_twice_the_heartbeat_keeps_the_updater_going(
        broker_settings, loaded_store):
    ids = publish_a_prediction_for_each(loaded_store, broker_settings, "fault-long", workers=1)
    proxy = TcpProxy(int(broker_settings.store_url.rsplit(":", 1)[1]))
    heartbeat = 1
    settings = dataclasses.replace(broker_settings, store_url=f"http://127.0.0.1:{proxy.port}",
                                   amqp_heartbeat=heartbeat, updater_batch_size=50)
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(
        Updater(ProductStore.from_settings(settings), settings).run(exit_when_idle=2)))
    worker.start()
    time.sleep(0.3)
    proxy.cut()
    time.sleep(6 * heartbeat)  # the broker drops a connection silent for two heartbeats
    proxy.restore()
    worker.join(120)
    assert not worker.is_alive()
    # waiting for the store served the heartbeats: the connection held, nothing came twice
    assert outcome.get("reconnects", 0) == 0, outcome
    assert outcome["applied"] + outcome["already_applied"] == PRODUCTS, outcome
    assert outcome["dead_lettered"] == 0, outcome
    assert_applied_exactly_once(loaded_store, ids, "fault-long")
