"""Predictions to the store through RabbitMQ: prodcat's publisher and updater against the
naive loop, on services of its own (an osmem store and a RabbitMQ node, removed after).

- naive: one ``basic_publish`` per prediction on a confirming channel, each
  waiting for its confirm (one process);
- prodcat: ``broker.publish`` (``--workers`` processes, ``--per-message``
  predictions a message, confirms);
- updater: ``broker.updater`` draining what prodcat published into the store
  (no rate ceiling), versioned bulk updates;
- plain: the same number of bulk partial updates sent straight to the store, with
  no broker and no versioning: what the store alone takes.

    .venvs/ml/bin/python -m benchmarks.publish_benchmark [--n 100000] [--workers 4]
        [--per-message 100]
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import tempfile
import time

import pika

from broker.publish import publish
from broker.topology import connect, declare_predictions_queue
from broker.updater import Updater
from local_stack.services import RabbitNode, free_port, start_store
from shared_config import storage
from shared_config.paths import RunPaths
from shared_config.settings import Settings
from store.client import ProductStore


def products_and_predictions(paths: RunPaths, n: int):
    """``n`` small products, and a prediction for each written as ``predict`` writes them."""
    products = ({"id": f"bench-{i:07d}", "title": f"product {i}", "price": float(i % 100)}
                for i in range(n))
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "wb") as raw, \
            gzip.open(raw, "wt") as out:
        for i in range(n):
            category = ["Tops > Knits", "Dresses > Dresses", "Bottoms > Jeans"][i % 3]
            out.write(json.dumps({
                "id": f"bench-{i:07d}", "run_id": paths.run_id, "version": 1, "model": "bench",
                "exclusive": {"category": category, "score": 0.8,
                              "path": [category.split(" > ")[0], category],
                              "top": [{"category": category, "score": 0.8}]},
                "rule_based": [{"category": "Tops", "score": 0.7, "path": ["Tops"]}]}) + "\n")
    return products


def naive_publish(paths: RunPaths, settings: Settings) -> int:
    """One message per prediction, each ``basic_publish`` waiting for its confirm."""
    connection = connect(settings.amqp_url)
    channel = connection.channel()
    declare_predictions_queue(channel, settings.predictions_queue,
                              settings.predictions_queue_max_length)
    channel.confirm_delivery()
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    sent = 0
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "rb") as raw, \
            gzip.open(raw, "rb") as lines:
        for line in lines:
            channel.basic_publish("", settings.predictions_queue, line, properties, mandatory=True)
            sent += 1
    channel.queue_purge(settings.predictions_queue)
    connection.close()
    return sent


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--per-message", type=int, default=100)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    port = free_port()
    node = RabbitNode(port=port, dist_port=free_port(), name=f"prodcat-bench-{port}")
    store_server = start_store(free_port())
    with tempfile.TemporaryDirectory() as prefix:
        try:
            node.start()
            settings = dataclasses.replace(
                Settings.from_env({}), prefix=prefix, store_url=store_server.url,
                amqp_url=node.url, predictions_queue="bench.predictions",
                updater_max_docs_per_second=1e9, updater_batch_size=1000)
            paths = RunPaths.for_run("bench", prefix)
            store = ProductStore.from_settings(settings)
            store.create_index(recreate=True)
            store.index_products(products_and_predictions(paths, args.n))
            print(f"{args.n:,} predictions; prodcat: {args.workers} workers, "
                  f"{args.per_message} predictions a message", flush=True)
            naive, naive_seconds = timed(naive_publish, paths, settings)
            print(f"{'naive publish (1 message + confirm each)':<44}{naive_seconds:>8.1f} s"
                  f"{naive / naive_seconds:>12,.0f} predictions/s", flush=True)
            published, seconds = timed(publish, paths, settings, args.workers, args.per_message)
            rate = published["published"] / seconds
            print(f"{'prodcat publish':<44}{seconds:>8.1f} s{rate:>12,.0f} predictions/s", flush=True)
            counts, update_seconds = timed(Updater(store, settings).run, exit_when_idle=1.0)
            applied = counts["applied"] / update_seconds
            print(f"{'updater, applied to the store':<44}{update_seconds:>8.1f} s"
                  f"{applied:>12,.0f} documents/s  ({counts})")
            plain = ((f"bench-{i:07d}", {"prediction_run_id": "plain"}) for i in range(args.n))
            _, plain_seconds = timed(store.update_partial, plain, chunk_size=1000)
            print(f"{'plain bulk partial updates, no broker':<44}{plain_seconds:>8.1f} s"
                  f"{args.n / plain_seconds:>12,.0f} documents/s")
            print(f"ratio prodcat / naive publish: {rate / (naive / naive_seconds):.1f}x; "
                  f"updater / plain bulk updates: {applied / (args.n / plain_seconds):.2f}x "
                  "(the updater's time includes 1 s of idle wait before it stops)")
        finally:
            node.stop(remove_data=True)
            store_server.close()


if __name__ == "__main__":
    main()
