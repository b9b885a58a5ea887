"""Publish a run's predictions to RabbitMQ: parallel, batched, confirmed, resumable.

    python -m broker.publish --run-id R [--what predictions|similar] [--workers 4]
                             [--per-message 100] [--restart]

``--what similar`` publishes the run's visual neighbours (``similar/``) instead of
its predictions; both travel the same queue (``broker/messages.py``).

The prediction files' lines are cut into messages of ``--per-message``
predictions (the updater applies them in bulk anyway, and the broker's cost is
per message); message ``n`` goes to worker ``n mod workers`` (each worker reads
the files and keeps its share: reading is cheap next to waiting for confirms).
Each worker has its own connection, publishes persistent messages with publisher
confirms, and on a lost connection or a refused message (the queue full)
reconnects with backoff and sends the unconfirmed message again, giving up only
after ``--give-up-after`` seconds without progress. Each message has a deterministic id
(``{run_id}:{n}``), and every worker notes under the run's
``predictions/published/`` how far it got (for its ``--per-message`` and
``--workers``; each note replaced whole): a crashed or retried publish goes on
from there. A message sent twice (confirmed by the broker but the confirm lost)
is harmless: the updater does not apply the same run's prediction twice.
"""
from __future__ import annotations

import argparse
import gzip
import logging
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pika

from broker.messages import CONTENT_TYPE
from broker.topology import connect, declare_predictions_queue
from shared_config import storage
from shared_config.cli import finish_stage, run_paths, setup_logging
from shared_config.paths import RunPaths
from shared_config.settings import Settings

log = logging.getLogger("prodcat.publish")
PROGRESS_EVERY_MESSAGES = 50
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 10.0


class PublishFailed(RuntimeError):
    """The broker stayed unreachable (or kept refusing) for longer than allowed."""


WHAT = ("predictions", "similar")


def _source(paths: RunPaths, what: str) -> tuple[str, str, str]:
    """``(files' directory, progress directory, stage that makes them)`` of what is sent."""
    if what == "predictions":
        return paths.predictions_dir, paths.publish_progress_dir, "predict"
    if what == "similar":
        return paths.similar_dir, paths.similar_published_dir, "similarity.neighbours"
    raise ValueError(f"unknown --what {what!r}; use one of {WHAT}")


def prediction_files(paths: RunPaths, what: str = "predictions") -> list[str]:
    directory, _, stage = _source(paths, what)
    files = storage.glob(directory + "part-*.jsonl.gz")
    if not files:
        raise FileNotFoundError(f"no {what} under {directory}: run {stage} first")
    return sorted(files)


def message_batches(paths: RunPaths, per_message: int,
                    what: str = "predictions") -> Iterator[tuple[int, bytes]]:
    """``(message number, body)``: the files' lines as they are, ``per_message`` a body."""
    number, lines = 0, []
    for path in prediction_files(paths, what):
        with storage.open_file(path, "rb") as raw, gzip.open(raw, "rb") as stream:
            for line in stream:
                if line.strip():
                    lines.append(line if line.endswith(b"\n") else line + b"\n")
                if len(lines) == per_message:
                    yield number, b"".join(lines)
                    number, lines = number + 1, []
    if lines:
        yield number, b"".join(lines)


class ConfirmedSender:
    """One connection that sends persistent messages and waits for each confirm,
    reconnecting with backoff when the broker goes away or refuses a message."""

    def __init__(self, settings: Settings, give_up_after: float):
        self.settings = settings
        self.give_up_after = give_up_after
        self.connection = self.channel = None
        self.reconnects = 0

    def _open(self) -> None:
        self.connection = connect(self.settings.amqp_url, self.settings.amqp_heartbeat)
        self.channel = self.connection.channel()
        declare_predictions_queue(self.channel, self.settings.predictions_queue,
                                  self.settings.predictions_queue_max_length)
        self.channel.confirm_delivery()

    def close(self) -> None:
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except pika.exceptions.AMQPError:
            pass  # already gone
        self.connection = self.channel = None

    def send(self, body: bytes, message_id: str, run_id: str) -> None:
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE, delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id, headers={"x-prodcat-run-id": run_id})
        delay, failing_since = RETRY_FIRST_SECONDS, None
        while True:
            try:
                if self.channel is None:
                    self._open()
                # With confirms on, this returns once the broker has the message on disk
                # and raises if the broker nacked it (queue full) or could not route it.
                self.channel.basic_publish("", self.settings.predictions_queue, body, properties,
                                           mandatory=True)
                return
            except pika.exceptions.AMQPError as err:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.give_up_after:
                    raise PublishFailed(f"message {message_id}: broker unavailable for "
                                        f"{self.give_up_after:.0f} s ({err!r})") from err
                log.warning("message %s not confirmed (%r); sending again in %.1f s",
                            message_id, err, delay)
                self.close()
                self.reconnects += 1
                time.sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)


def _progress_file(paths: RunPaths, worker: int, workers: int, per_message: int,
                   what: str = "predictions") -> str:
    """Message numbers mean something only for one ``--per-message`` and ``--workers``: a
    publish with others finds no note and sends everything (the updater skips what it has)."""
    return _source(paths, what)[1] + f"per-{per_message}-worker-{worker}-of-{workers}.json"


def _confirmed_through(progress_file: str) -> int:
    if not storage.exists(progress_file):
        return -1
    try:
        return int(storage.read_json(progress_file)["confirmed_through"])
    except (ValueError, KeyError, TypeError) as err:
        log.warning("unreadable progress note %s (%s): publishing this share again",
                    progress_file, err)
        return -1


def publish_share(paths: RunPaths, settings: Settings, worker: int, workers: int,
                  per_message: int, give_up_after: float, what: str = "predictions") -> dict:
    """Publish messages ``worker, worker + workers, ...``, after those already confirmed."""
    progress_file = _progress_file(paths, worker, workers, per_message, what)
    id_prefix = paths.run_id if what == "predictions" else f"{paths.run_id}:{what}"
    done = _confirmed_through(progress_file)
    sender = ConfirmedSender(settings, give_up_after)
    counts = {"messages": 0, "predictions": 0, "skipped_messages": 0}
    try:
        for number, body in message_batches(paths, per_message, what):
            if number % workers != worker:
                continue
            if number <= done:
                counts["skipped_messages"] += 1
                continue
            sender.send(body, f"{id_prefix}:{number}", paths.run_id)
            counts["messages"] += 1
            counts["predictions"] += body.count(b"\n")
            if counts["messages"] % PROGRESS_EVERY_MESSAGES == 0:
                storage.write_json(progress_file, {"confirmed_through": number})
                log.info("worker %d/%d: %d predictions published", worker + 1, workers,
                         counts["predictions"])
            done = number
        storage.write_json(progress_file, {"confirmed_through": done})
    finally:
        sender.close()
    return {**counts, "reconnects": sender.reconnects}


def publish(paths: RunPaths, settings: Settings, workers: int = 4, per_message: int = 100,
            restart: bool = False, give_up_after: float = 300.0,
            what: str = "predictions") -> dict:
    if workers < 1 or per_message < 1:
        raise ValueError("workers and per_message must be at least 1")
    prediction_files(paths, what)  # a clear error before any worker starts
    progress_dir = _source(paths, what)[1]
    if restart and storage.exists(progress_dir):
        storage.remove(progress_dir)
    started = time.monotonic()
    args = [(paths, settings, worker, workers, per_message, give_up_after, what)
            for worker in range(workers)]
    if workers == 1:
        shares = [publish_share(*args[0])]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=setup_logging) as pool:
            shares = list(pool.map(publish_share, *zip(*args)))
    seconds = time.monotonic() - started
    totals = {key: sum(share[key] for share in shares) for key in shares[0]}
    log.info("published %d %s lines in %d messages in %.1f s (%d messages confirmed before)",
             totals["predictions"], what, totals["messages"], seconds, totals["skipped_messages"])
    return {"published": totals["predictions"], **totals, "what": what,
            "queue": settings.predictions_queue, "workers": workers, "seconds": round(seconds, 2)}


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m broker.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--what", choices=WHAT, default="predictions",
                        help="the run's predictions (default) or its visual neighbours")
    parser.add_argument("--workers", type=int, default=4, help="parallel connections (default 4)")
    parser.add_argument("--per-message", type=int, default=100,
                        help="predictions per message (default 100)")
    parser.add_argument("--restart", action="store_true",
                        help="publish everything again, ignoring what was confirmed before")
    parser.add_argument("--give-up-after", type=float, default=300.0, metavar="SECONDS",
                        help="fail when the broker stays unavailable this long (default 300)")
    args = parser.parse_args(argv)
    paths = run_paths(parser, args.run_id)
    if args.workers < 1 or args.per_message < 1:
        parser.error("--workers and --per-message must be at least 1")
    stage = "publish" if args.what == "predictions" else f"publish_{args.what}"
    finish_stage(paths, stage, publish(paths, Settings.from_env(), args.workers,
                                       args.per_message, args.restart, args.give_up_after,
                                       args.what))


if __name__ == "__main__":
    main()
