"""Predictions through the real RabbitMQ node into the real store."""
import dataclasses
import gzip
import json
import threading

import pika
import pytest

from broker import messages
from broker.publish import ConfirmedSender, publish
from broker.topology import connect, dead_letter_names, declare_predictions_queue
from broker.updater import Updater
from shared_config import storage
from shared_config.paths import RunPaths
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products

IDS = [f"demo-{i:07d}" for i in range(120)]


def prediction(product_id: str, run_id: str, version: int, category="Shoes > Boots") -> dict:
    return {"id": product_id, "run_id": run_id, "version": version, "model": "m",
            "exclusive": {"category": category, "score": 0.9,
                          "path": ["Shoes", category] if " > " in category else [category]}}


def write_predictions(paths: RunPaths, ids, version=1000, category="Shoes > Boots"):
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "wb") as raw, \
            gzip.open(raw, "wt") as out:
        for product_id in ids:
            out.write(json.dumps(prediction(product_id, paths.run_id, version, category)) + "\n")


def versions(store: ProductStore, ids) -> dict:
    """Each product's document version: 1 when loaded, +1 for every write since."""
    docs = store.client.mget(index=store.index, body={"ids": list(ids)})["docs"]
    return {doc["_id"]: doc["_version"] for doc in docs}


def dead_letters(settings, expected: int) -> list[tuple[bytes, dict]]:
    connection = connect(settings.amqp_url)
    channel = connection.channel()
    found = []
    for _ in range(expected + 1):
        method, properties, body = channel.basic_get(dead_letter_names(settings.predictions_queue)[1],
                                                     auto_ack=True)
        if method is None:
            break
        found.append((body, properties.headers))
    connection.close()
    return found


def send_raw(settings, *bodies: bytes) -> None:
    connection = connect(settings.amqp_url)
    channel = connection.channel()
    declare_predictions_queue(channel, settings.predictions_queue,
                              settings.predictions_queue_max_length)
    for body in bodies:
        channel.basic_publish("", settings.predictions_queue, body,
                              pika.BasicProperties(delivery_mode=2, message_id="raw"))
    connection.close()


@pytest.fixture
def loaded_store(broker_settings):
    store = ProductStore.from_settings(broker_settings)
    load_products(store, demo_catalog.generate(120), recreate=True)
    return store


def test_message_lines_become_versioned_updates_or_reasons():
    good = json.dumps(prediction("p1", "run-a", 7)).encode()
    updates, bad = messages.parse(good + b"\n{oops\n" + b'{"id": "p2", "run_id": "r"}\n\n')
    assert [(u.product_id, u.version) for u in updates] == [("p1", 7)]
    assert updates[0].fields["prediction_path"] == ["Shoes", "Shoes > Boots"]
    assert updates[0].fields["prediction_run_id"] == "run-a"
    assert [reason.split(":")[0] for _, reason in bad] == [
        "not JSON", "a prediction needs a non-negative 64-bit integer 'version'"]
    assert messages.parse(b"  ") == ([], [(b"  ", "empty message")])


def test_published_predictions_reach_the_store_once(broker_settings, loaded_store):
    paths = RunPaths.for_run("run-a")
    write_predictions(paths, IDS)
    result = publish(paths, broker_settings, workers=3, per_message=7)
    assert result["published"] == 120 and result["messages"] == 18  # ceil(120 / 7)
    counts = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert counts == {"applied": 120, "already_applied": 0, "superseded": 0, "dead_lettered": 0}
    loaded_store.refresh()
    assert loaded_store.count({"term": {"prediction_run_id": "run-a"}}) == 120
    assert loaded_store.count({"term": {"prediction_path": "Shoes > Boots"}}) == 120
    doc = loaded_store.get("demo-0000042")
    assert doc["prediction"]["exclusive"]["path"] == ["Shoes", "Shoes > Boots"]
    assert doc["prediction_version"] == 1000 and doc["title"]  # the product's own fields kept
    assert set(versions(loaded_store, IDS).values()) == {2}  # written exactly once


def test_a_publish_run_again_resumes_and_a_repeat_applies_nothing_twice(broker_settings,
                                                                        loaded_store):
    paths = RunPaths.for_run("run-b")
    write_predictions(paths, IDS)
    publish(paths, broker_settings, workers=2, per_message=10)
    again = publish(paths, broker_settings, workers=2, per_message=10)
    assert again["published"] == 0 and again["skipped_messages"] == 12
    repeat = publish(paths, broker_settings, workers=2, per_message=10, restart=True)
    assert repeat["published"] == 120
    counts = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert counts["applied"] == 120 and counts["already_applied"] == 120
    assert set(versions(loaded_store, IDS).values()) == {2}


def test_an_older_run_never_overwrites_a_newer_one(broker_settings, loaded_store):
    newer, older = RunPaths.for_run("run-new"), RunPaths.for_run("run-old")
    write_predictions(newer, IDS[:60], version=2000, category="Bags")
    write_predictions(older, IDS, version=1000, category="Shoes > Boots")
    publish(newer, broker_settings, workers=1)
    publish(older, broker_settings, workers=1)  # arrives after the newer one
    counts = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert counts == {"applied": 120, "already_applied": 0, "superseded": 60, "dead_lettered": 0}
    loaded_store.refresh()
    assert loaded_store.count({"term": {"prediction_run_id": "run-new"}}) == 60
    assert loaded_store.count({"term": {"prediction_run_id": "run-old"}}) == 60  # the rest
    assert loaded_store.get(IDS[0])["prediction"]["exclusive"]["category"] == "Bags"


def test_malformed_lines_and_unknown_products_are_dead_lettered_alone(broker_settings,
                                                                       loaded_store):
    good = json.dumps(prediction("demo-0000001", "run-c", 5)).encode()
    ghost = json.dumps(prediction("ghost", "run-c", 5)).encode()
    send_raw(broker_settings, b"{not json", b"\n".join([good, b"[1, 2]", ghost]), b"")
    counts = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert counts["applied"] == 1 and counts["dead_lettered"] == 4
    found = dead_letters(broker_settings, 4)
    reasons = sorted(headers["x-prodcat-reason"].split(":")[0] for _, headers in found)
    assert reasons == ["empty message", "not JSON", "not a JSON object", "rejected"]
    assert {body for body, _ in found} >= {b"{not json", ghost}
    assert all(headers["x-prodcat-message-id"] == "raw" for _, headers in found)
    loaded_store.refresh()
    assert loaded_store.get("demo-0000001")["prediction_run_id"] == "run-c"


def test_updater_stops_cleanly_and_leaves_nothing_unacknowledged(broker_settings, loaded_store):
    paths = RunPaths.for_run("run-d")
    write_predictions(paths, IDS)
    publish(paths, broker_settings, workers=1, per_message=5)
    updater = Updater(loaded_store, broker_settings)
    threading.Timer(0.2, updater.stop).start()
    first = updater.run()
    rest = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert first["applied"] + rest["applied"] == 120
    loaded_store.refresh()
    assert loaded_store.count({"term": {"prediction_run_id": "run-d"}}) == 120


def test_a_full_queue_refuses_messages_and_the_sender_waits_for_room(broker_settings):
    settings = dataclasses.replace(broker_settings, predictions_queue_max_length=2)
    sender = ConfirmedSender(settings, give_up_after=30)
    sender.send(b"1", "m1", "r")
    sender.send(b"2", "m2", "r")
    third = threading.Thread(target=sender.send, args=(b"3", "m3", "r"))
    third.start()
    third.join(1.5)
    assert third.is_alive()  # refused (nack) and retrying: not dropped, not queued
    connection = connect(settings.amqp_url)
    channel = connection.channel()
    assert channel.basic_get(settings.predictions_queue, auto_ack=True)[2] == b"1"
    third.join(30)
    bodies = [channel.basic_get(settings.predictions_queue, auto_ack=True)[2] for _ in range(3)]
    connection.close()
    sender.close()
    assert bodies == [b"2", b"3", None] and sender.reconnects >= 1


POISON_LINES = {
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "a 5,000-digit number": b'{"id": "demo-0000003", "run_id": "r", "version": ' + b"9" * 5000
                            + b"}",
    "a float overflow": b'{"id": "demo-0000004", "run_id": "r", "version": 5, '
                        b'"exclusive": {"score": 1e999, "path": []}}',
    "a version beyond 64 bits": b'{"id": "demo-0000005", "run_id": "r", "version": '
                                + str(2**64).encode() + b"}",
    "not UTF-8": b'{"id": "demo-0000006", "run_id": "\xff\xfe", "version": 5}',
    "a number as id": b'{"id": 7, "run_id": "r", "version": 5}',
}


@pytest.mark.parametrize("name", sorted(POISON_LINES))
def test_a_poison_line_is_refused_with_a_reason_never_raised(name):
    updates, bad = messages.parse(POISON_LINES[name])
    assert updates == [] and len(bad) == 1 and bad[0][1]


def test_poison_messages_of_every_kind_are_dead_lettered_and_the_rest_applied(broker_settings,
                                                                             loaded_store):
    good = json.dumps(prediction("demo-0000001", "run-p", 5)).encode()
    send_raw(broker_settings, *POISON_LINES.values(), good + b"\n" + POISON_LINES["deep nesting"])
    outcome = {}
    updater = threading.Thread(target=lambda: outcome.update(
        Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)))
    updater.start()
    updater.join(60)
    assert not updater.is_alive(), "the updater is stuck on a poison message"
    assert outcome["applied"] == 1 and outcome["dead_lettered"] == len(POISON_LINES) + 1, outcome
    found = dead_letters(broker_settings, len(POISON_LINES) + 1)
    assert all(headers["x-prodcat-reason"] for _, headers in found)
    assert {body for body, _ in found} == set(POISON_LINES.values())
    loaded_store.refresh()
    assert loaded_store.get("demo-0000001")["prediction_run_id"] == "run-p"


def test_a_batch_the_store_will_never_take_costs_only_the_product_at_fault(broker_settings,
                                                                          loaded_store):
    from tests.helpers import StoreFaults

    faults = StoreFaults(broker_settings.store_url, max_bulk_bytes=20_000)
    settings = dataclasses.replace(broker_settings, store_url=faults.url)
    paths = RunPaths.for_run("run-413")
    write_predictions(paths, IDS[:60])
    publish(paths, settings, workers=1, per_message=60)
    huge = prediction(IDS[60], "run-413", 1000)
    huge["model"] = "m" * 30_000  # alone, still over the store's request limit
    send_raw(settings, json.dumps(huge).encode())
    outcome = {}
    updater = threading.Thread(target=lambda: outcome.update(
        Updater(ProductStore.from_settings(settings), settings).run(exit_when_idle=1.5)))
    updater.start()
    updater.join(60)
    faults.close()
    assert not updater.is_alive(), "the updater retries a request the store will never take"
    assert faults.injected["413"] >= 2, faults.injected  # the batch, then the product alone
    assert outcome["applied"] == 60 and outcome["dead_lettered"] == 1, outcome
    [(body, headers)] = dead_letters(settings, 1)
    assert json.loads(body)["id"] == IDS[60] and "413" in headers["x-prodcat-reason"]


def test_a_product_the_store_cannot_read_for_now_is_retried_not_dead_lettered(broker_settings,
                                                                             loaded_store):
    from tests.helpers import StoreFaults

    faults = StoreFaults(broker_settings.store_url, mget_errors={IDS[3]: 2, IDS[4]: 1})
    settings = dataclasses.replace(broker_settings, store_url=faults.url)
    paths = RunPaths.for_run("run-shard")
    write_predictions(paths, IDS[:10])
    publish(paths, settings, workers=1, per_message=10)
    counts = Updater(ProductStore.from_settings(settings), settings).run(exit_when_idle=1.5)
    faults.close()
    assert faults.injected["mget_error"] == 3
    assert counts["applied"] == 10 and counts["dead_lettered"] == 0, counts
    assert set(versions(loaded_store, IDS[:10]).values()) == {2}


def test_the_rate_ceiling_builds_no_credit_while_idle(broker_settings):
    settings = dataclasses.replace(broker_settings, updater_max_docs_per_second=1000)
    updater = Updater(None, settings)
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    updater._clock, updater._sleep = (lambda: now[0]), sleep
    updater._throttle(1000)
    now[0] += 3600  # an idle hour
    for _ in range(3):
        updater._throttle(1000)  # 3,000 updates: at 1,000/s, no sooner than 2 s after the first
    assert sum(slept) == pytest.approx(2.0)


def test_a_later_prediction_replaces_the_prediction_object_whole(loaded_store):
    first = {"prediction": {"run_id": "r", "exclusive": {"category": "Bags"},
                            "rule_based": [{"category": "Bags"}]},
             "prediction_version": 10, "prediction_run_id": "r"}
    second = {"prediction": {"run_id": "r", "rule_based": [{"category": "Shoes"}]},
              "prediction_version": 11, "prediction_run_id": "r"}
    assert loaded_store.update_if_newer({IDS[0]: (10, first)})[IDS[0]] == "applied"
    assert loaded_store.update_if_newer({IDS[0]: (11, second)})[IDS[0]] == "applied"
    doc = loaded_store.get(IDS[0])
    assert doc["prediction"] == second["prediction"]  # no "exclusive" left from the first
    assert doc["title"]  # the product's own fields are kept


def test_a_publish_resumed_with_another_message_size_skips_nothing(broker_settings,
                                                                    loaded_store):
    paths = RunPaths.for_run("run-resize")
    write_predictions(paths, IDS)
    publish(paths, broker_settings, workers=2, per_message=10)
    resized = publish(paths, broker_settings, workers=2, per_message=30)
    assert resized["published"] == 120 and resized["skipped_messages"] == 0
    # a progress note cut short by a crash mid-write does not stop the next publish
    for note in storage.glob(paths.publish_progress_dir + "*.json"):
        with storage.open_file(note, "w") as handle:
            handle.write('{"confirmed_thr')
    again = publish(paths, broker_settings, workers=2, per_message=10)
    assert again["published"] == 120
    counts = Updater(loaded_store, broker_settings).run(exit_when_idle=1.5)
    assert counts["applied"] == 120 and counts["dead_lettered"] == 0


def test_updaters_in_parallel_apply_each_product_once_and_keep_the_newest_run(broker_settings,
                                                                             loaded_store):
    """Three updaters share the queue; two runs' predictions (the older one published after
    the newer, and the newer twice) arrive interleaved. Every product ends with the newer
    run's prediction, written once; the rest is counted as superseded or already applied."""
    newer, older = RunPaths.for_run("run-newer"), RunPaths.for_run("run-older")
    write_predictions(newer, IDS, version=2000, category="Bags > Totes")
    write_predictions(older, IDS, version=1000, category="Shoes > Boots")
    publish(newer, broker_settings, workers=2, per_message=7)
    publish(older, broker_settings, workers=2, per_message=5)
    for note in storage.glob(newer.publish_progress_dir + "*.json"):
        storage.remove(note)  # the newer run published again, from the start
    publish(newer, broker_settings, workers=2, per_message=11)
    before = versions(loaded_store, IDS)
    small = dataclasses.replace(broker_settings, updater_batch_size=20)
    results = []

    def drain():
        results.append(Updater(ProductStore.from_settings(small), small).run(exit_when_idle=2.0))

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 3 and sum(result["applied"] > 0 for result in results) >= 2, results
    total = {key: sum(result[key] for result in results) for key in results[0]}
    assert total["dead_lettered"] == 0
    assert total["applied"] + total["already_applied"] + total["superseded"] == 3 * len(IDS)
    loaded_store.refresh()
    docs = {doc["id"]: doc for doc in loaded_store.search({"match_all": {}}, size=len(IDS))}
    assert {doc["prediction_version"] for doc in docs.values()} == {2000}
    assert {doc["prediction_path"][-1] for doc in docs.values()} == {"Bags > Totes"}
    # the older run never overwrote the newer one: at most one write of each run per product
    after = versions(loaded_store, IDS)
    assert all(1 <= after[i] - before[i] <= 2 for i in IDS)
    assert total["applied"] <= 2 * len(IDS)


def test_a_batch_is_read_once_and_written_in_one_bulk_request(broker_settings):
    """The updater sends each batch as one bulk request, however large: on osmem a request
    costs about the same for 500 products as for 5,000 (the store-writes benchmark)."""
    ids = [f"demo-{i:07d}" for i in range(1200)]
    store = ProductStore.from_settings(broker_settings)
    load_products(store, demo_catalog.generate(len(ids)), recreate=True)
    paths = RunPaths.for_run("run-big-batch")
    write_predictions(paths, ids)
    publish(paths, broker_settings, workers=1, per_message=100)
    settings = dataclasses.replace(broker_settings, updater_batch_size=1200)
    updater_store = ProductStore.from_settings(settings)
    requests = {"mget": [], "bulk": []}
    for name in requests:
        original = getattr(updater_store.client, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            requests[_name].append(kwargs.get("body", args[0] if args else None))
            return _original(*args, **kwargs)
        setattr(updater_store.client, name, counting)
    counts = Updater(updater_store, settings).run(exit_when_idle=1.5)
    assert counts["applied"] == 1200 and counts["dead_lettered"] == 0
    assert len(requests["mget"]) == 1 and len(requests["mget"][0]["ids"]) == 1200
    assert len(requests["bulk"]) == 1
    assert requests["bulk"][0].count("\n") == 2 * 1200  # an action line and a source line each
    assert set(versions(store, ids).values()) == {2}
