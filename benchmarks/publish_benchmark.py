"""Predictions to the store through RabbitMQ: prodcat's publisher and updater against the
naive loop, on services of its own (an osmem store and a RabbitMQ node, removed after).

- naive: one ``basic_publish`` per prediction on a confirming channel, each
  waiting for its confirm (one process);
- prodcat: ``broker.publish`` (``--workers`` processes, ``--per-message``
  predictions a message, confirms);
- updater: ``broker.updater`` draining what prodcat published into the store
  (no rate ceiling), versioned bulk updates;
- plain: the same updates (the same fields, new values) as bulk partial updates
  sent straight to the store in requests of the updater's size (``--batch``), with no
  broker and no versioning: what the store alone takes;
- parallel: a newer run's predictions, published again and drained by
  ``--updaters`` updater processes sharing the queue (versioned writes keep them
  from undoing each other).

    .venvs/ml/bin/python -m benchmarks.publish_benchmark [--n 100000] [--workers 4]
        [--per-message 100] [--updaters 3] [--batch 5000]
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import pika

from broker.messages import to_update
from broker.publish import publish
from broker.topology import connect, declare_predictions_queue
from broker.updater import Updater
from local_stack.services import RabbitNode, free_port, start_store
from shared_config import storage
from shared_config.paths import RunPaths
from shared_config.settings import Settings
from store.client import ProductStore


def write_predictions(paths: RunPaths, n: int, version: int = 1) -> None:
    """A prediction for each of ``n`` products, written as ``predict`` writes them."""
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "wb") as raw, \
            gzip.open(raw, "wt") as out:
        for i in range(n):
            category = ["Tops > Knits", "Dresses > Dresses", "Bottoms > Jeans"][i % 3]
            out.write(json.dumps({
                "id": f"bench-{i:07d}", "run_id": paths.run_id, "version": version, "model": "bench",
                "exclusive": {"category": category, "score": 0.8,
                              "path": [category.split(" > ")[0], category],
                              "top": [{"category": category, "score": 0.8}]},
                "rule_based": [{"category": "Tops", "score": 0.7, "path": ["Tops"]}]}) + "\n")


def products_and_predictions(paths: RunPaths, n: int):
    """``n`` small products, and a prediction for each written as ``predict`` writes them."""
    write_predictions(paths, n)
    return ({"id": f"bench-{i:07d}", "title": f"product {i}", "price": float(i % 100)}
            for i in range(n))


def plain_updates(paths: RunPaths):
    """The fields the updater writes for each prediction, under another run id (new values:
    a store skips an update that changes nothing)."""
    with storage.open_file(paths.predictions_dir + "part-00000.jsonl.gz", "rb") as raw, \
            gzip.open(raw, "rb") as lines:
        for line in lines:
            update = to_update(line)
            fields = {**update.fields, "prediction_run_id": "plain"}
            fields["prediction"] = {**fields["prediction"], "run_id": "plain"}
            yield update.product_id, fields


def drain(settings_dict: dict, start_at: float = 0.0) -> tuple[dict, float | None, float | None]:
    """One updater: apply what the queue holds (from ``start_at``, a wall-clock time), stop
    when it is idle; its counts and the span of its work (first message, last ack)."""
    settings = Settings(**settings_dict)
    updater = Updater(ProductStore.from_settings(settings), settings)
    time.sleep(max(0.0, start_at - time.time()))
    counts = updater.run(exit_when_idle=1.0)
    return counts, updater.first_message_at, updater.last_ack_at


def parallel_updaters(settings: Settings, count: int) -> tuple[dict, float]:
    """``count`` updater processes draining one queue, started together once every process is
    up; their summed counts and the span from the first message any took to the last ack."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=context) as pool:
        list(pool.map(time.sleep, [0.1] * count))  # the processes are up before the clock
        start_at = time.time() + 1.0
        results = list(pool.map(drain, [dataclasses.asdict(settings)] * count,
                                [start_at] * count))
    firsts = [first for _, first, _ in results if first]
    lasts = [last for _, _, last in results if last]
    counts = {key: sum(r[0].get(key, 0) for r in results) for key in results[0][0]}
    return counts, max(lasts) - min(firsts)


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
    parser.add_argument("--updaters", type=int, default=3, help="updater processes in parallel")
    parser.add_argument("--batch", type=int, default=Settings.from_env({}).updater_batch_size,
                        help="products a bulk request, for the updaters and the plain updates "
                             "alike (default: the updater's, %(default)s)")
    args = parser.parse_args(argv)
    if min(args.n, args.workers, args.per_message, args.updaters, args.batch) < 1:
        parser.error("--n, --workers, --per-message, --updaters and --batch must be positive")
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
                updater_max_docs_per_second=1e9, updater_batch_size=args.batch)
            paths = RunPaths.for_run("bench", prefix)
            store = ProductStore.from_settings(settings)
            store.create_index(recreate=True)
            store.index_products(products_and_predictions(paths, args.n))
            print(f"{args.n:,} predictions; prodcat: {args.workers} workers, "
                  f"{args.per_message} predictions a message; {args.batch:,} products a bulk "
                  "request", flush=True)
            naive, naive_seconds = timed(naive_publish, paths, settings)
            print(f"{'naive publish (1 message + confirm each)':<44}{naive_seconds:>8.1f} s"
                  f"{naive / naive_seconds:>12,.0f} predictions/s", flush=True)
            published, seconds = timed(publish, paths, settings, args.workers, args.per_message)
            rate = published["published"] / seconds
            print(f"{'prodcat publish':<44}{seconds:>8.1f} s{rate:>12,.0f} predictions/s", flush=True)
            counts, first, last = drain(dataclasses.asdict(settings))
            update_seconds = last - first
            applied = counts["applied"] / update_seconds
            print(f"{'updater, applied to the store':<44}{update_seconds:>8.1f} s"
                  f"{applied:>12,.0f} documents/s  ({counts})")
            _, plain_seconds = timed(store.update_partial, plain_updates(paths),
                                     chunk_size=args.batch)
            plain_rate = args.n / plain_seconds
            print(f"{'plain bulk partial updates, no broker':<44}{plain_seconds:>8.1f} s"
                  f"{plain_rate:>12,.0f} documents/s")
            newer = RunPaths.for_run("bench-newer", prefix)
            write_predictions(newer, args.n, version=2)
            publish(newer, settings, args.workers, args.per_message)
            counts, parallel_seconds = parallel_updaters(settings, args.updaters)
            parallel = counts["applied"] / parallel_seconds
            print(f"{f'{args.updaters} updaters in parallel (newer run)':<44}"
                  f"{parallel_seconds:>8.1f} s{parallel:>12,.0f} documents/s  ({counts})")
            print(f"ratio prodcat / naive publish: {rate / (naive / naive_seconds):.1f}x; "
                  f"updater / plain bulk updates: {applied / plain_rate:.2f}x; "
                  f"{args.updaters} updaters / plain: {parallel / plain_rate:.2f}x "
                  "(an updater's time: from the first message it takes to its last "
                  "acknowledgement)")
        finally:
            node.stop(remove_data=True)
            store_server.close()


if __name__ == "__main__":
    main()
