"""Publish a run's predictions to RabbitMQ as persistent messages with publisher confirms.

Each message carries one product's prediction, as JSON; the updater applies it
to the store. ``python -m broker.publish --run-id R``
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import time
from collections.abc import Iterator

import pika

from broker.topology import connect, declare_predictions_queue
from shared_config import storage
from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import RunPaths
from shared_config.settings import Settings

log = logging.getLogger("prodcat.publish")
PROGRESS_EVERY = 5_000


def read_predictions(paths: RunPaths) -> Iterator[dict]:
    files = storage.glob(paths.predictions_dir + "part-*.jsonl.gz")
    if not files:
        raise FileNotFoundError(f"no predictions under {paths.predictions_dir}: run predict first")
    for path in files:
        with storage.open_file(path, "rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)


def publish(paths: RunPaths, settings: Settings) -> dict:
    connection = connect(settings.amqp_url)
    published = 0
    started = time.monotonic()
    try:
        channel = connection.channel()
        declare_predictions_queue(channel, settings.predictions_queue)
        channel.confirm_delivery()
        properties = pika.BasicProperties(content_type="application/json",
                                          delivery_mode=pika.DeliveryMode.Persistent)
        for prediction in read_predictions(paths):
            # With confirms on, basic_publish returns once the broker has the message
            # and raises if it was nacked or unroutable.
            channel.basic_publish(exchange="", routing_key=settings.predictions_queue,
                                  body=json.dumps(prediction).encode("utf-8"),
                                  properties=properties, mandatory=True)
            published += 1
            if published % PROGRESS_EVERY == 0:
                log.info("published %d predictions", published)
    finally:
        if connection.is_open:
            connection.close()
    seconds = time.monotonic() - started
    log.info("published %d predictions in %.1f s", published, seconds)
    return {"published": published, "queue": settings.predictions_queue,
            "seconds": round(seconds, 2)}


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m broker.publish", description=__doc__)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    finish_stage(paths, "publish", publish(paths, Settings.from_env()))


if __name__ == "__main__":
    main()
