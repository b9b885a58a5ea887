"""The updater: consumes predictions from RabbitMQ and applies them to the store.

(Visual neighbours travel the same way, versioned on their own field: see
``broker/messages.py``.)

Messages (batches of predictions, see ``broker/messages.py``) are gathered into
batches of about ``PRODCAT_UPDATER_BATCH_SIZE`` products, each read with one ``mget``
and written with one bulk request, applied no faster than
``PRODCAT_UPDATER_MAX_DOCS_PER_SECOND``. A message is acknowledged
only once the store has taken every one of its predictions, so a crash loses
nothing: the broker delivers the message again. Each update carries its run's
version and is written only where the product holds no newer one (optimistic
concurrency, ``ProductStore.update_if_newer``): a re-delivered prediction is not
applied twice and an older run never overwrites a newer one. While the store is
unreachable, overloaded or without its index, the batch is retried with backoff,
and the wait keeps the broker connection's heartbeats going; a lost broker
connection is opened again. A request the store will never take (400, 413, a
field it cannot store) is retried product by product, so only the products at
fault fail. Whatever the updater cannot apply — a product the store refuses
(unknown product, bad field), a line that is not a prediction, whatever the
reason — goes to the dead-letter queue with the reason in its ``x-prodcat-reason``
header: no message can block the queue. The rate ceiling builds no credit while
idle. SIGTERM/SIGINT finish the current batch first (or, if the store is down,
leave it unacknowledged for the next updater).

``python -m broker.updater``                         runs until stopped
``python -m broker.updater --exit-when-idle 10``     stops after 10 s without messages
"""
from __future__ import annotations

import argparse
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import pika

from broker import messages
from broker.messages import Update
from broker.topology import connect, dead_letter_names, declare_predictions_queue
from shared_config.cli import emit_result, setup_logging
from shared_config.settings import Settings
from store.client import ALREADY_APPLIED, APPLIED, REJECTED, SUPERSEDED, TRANSIENT, ProductStore

log = logging.getLogger("prodcat.updater")
POLL_SECONDS = 0.5
MAX_RECONNECT_DELAY = 30.0  # seconds between tries while the broker is away
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 1.0, 30.0
HEARTBEAT_SERVICE_SECONDS = 0.2  # while a store request runs, the broker is served this often
# Unacknowledged messages the broker may hand this updater at once (at most the batch size):
# a batch fills from messages of at least batch size / this many predictions (the publisher
# sends 100 a message), and the prefetched backlog stays bounded however large the batch.
MAX_PREFETCH_MESSAGES = 1000


@dataclass
class _Pending:
    delivery_tag: int
    message_id: str | None
    updates: list[Update]
    bad_lines: list[tuple[bytes, str]]


class _Interrupted(Exception):
    """Stopped while the store was unreachable: the batch stays unacknowledged."""


class Updater:
    def __init__(self, store: ProductStore, settings: Settings):
        self.store = store
        self.settings = settings
        self.stopping = False
        self.counts = {APPLIED: 0, ALREADY_APPLIED: 0, SUPERSEDED: 0, "dead_lettered": 0}
        self._clock = time.monotonic
        self._ready_at = 0.0  # when the rate ceiling lets the next batch go
        self._connection: pika.BlockingConnection | None = None
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="prodcat-store")
        # wall-clock span of the work: the first message received, the last batch acknowledged
        self.first_message_at: float | None = None
        self.last_ack_at: float | None = None

    def _sleep(self, seconds: float) -> None:
        """Wait; on a live broker connection, while serving its heartbeats (a plain
        sleep would starve them, and the broker would drop the connection)."""
        if self._connection is not None and self._connection.is_open:
            self._connection.sleep(seconds)
        else:
            time.sleep(seconds)

    def _store_call(self, function, *args, **kwargs):
        """Run a store request in the updater's store thread while this thread serves the
        broker connection's heartbeats: a store that answers slowly, or not at all until
        the client's timeout, must not make the broker drop the connection."""
        if self._connection is None or not self._connection.is_open:
            return function(*args, **kwargs)
        future = self._store_thread.submit(function, *args, **kwargs)
        while not wait([future], timeout=HEARTBEAT_SERVICE_SECONDS).done:
            if self._connection.is_open:
                self._connection.process_data_events(time_limit=0)
        return future.result()

    def stop(self, *_):
        log.info("stopping after the current batch")
        self.stopping = True

    def run(self, exit_when_idle: float | None = None) -> dict:
        """Consume until stopped (or idle for ``exit_when_idle`` seconds). A lost broker
        connection means reconnecting with backoff: what was not acknowledged comes again,
        and versioned writes keep a second delivery from being applied twice."""
        delay = 1.0
        while True:
            try:
                return self._consume(exit_when_idle)
            except pika.exceptions.AMQPError as err:  # connection or channel lost or closed
                self.counts["reconnects"] = self.counts.get("reconnects", 0) + 1
                if self.stopping:
                    log.warning("lost the broker while stopping (%s)", err)
                    return dict(self.counts)
                log.warning("lost the broker (%s): reconnecting in %.0f s; unacknowledged "
                            "messages will come again", err or type(err).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)

    def _consume(self, exit_when_idle: float | None) -> dict:
        connection = connect(self.settings.amqp_url, self.settings.amqp_heartbeat)
        self._connection = connection
        channel = connection.channel()
        declare_predictions_queue(channel, self.settings.predictions_queue,
                                  self.settings.predictions_queue_max_length)
        channel.confirm_delivery()  # a dead-lettered copy is confirmed before its ack
        channel.basic_qos(prefetch_count=min(self.settings.updater_batch_size,
                                             MAX_PREFETCH_MESSAGES))
        pending: list[_Pending] = []
        pending_updates = 0
        idle_since = time.monotonic()
        try:
            for method, properties, body in channel.consume(self.settings.predictions_queue,
                                                            inactivity_timeout=POLL_SECONDS):
                if method is None:
                    self._flush(channel, pending)
                    pending_updates = 0
                    if self.stopping or (exit_when_idle is not None
                                         and time.monotonic() - idle_since > exit_when_idle):
                        break
                    continue
                idle_since = time.monotonic()
                if self.first_message_at is None:
                    self.first_message_at = time.time()
                pending.append(_Pending(method.delivery_tag, properties.message_id,
                                        *messages.parse(body)))
                pending_updates += len(pending[-1].updates)
                if pending_updates >= self.settings.updater_batch_size or self.stopping:
                    self._flush(channel, pending)
                    pending_updates = 0
                if self.stopping:
                    break
            self._flush(channel, pending)
            channel.cancel()
        except _Interrupted:
            log.warning("stopped with %d messages unacknowledged: the broker delivers them again",
                        len(pending))
        finally:
            self._connection = None
            if connection.is_open:
                try:
                    connection.close()
                except pika.exceptions.AMQPError:
                    pass  # closing a connection that is going anyway
        return dict(self.counts)

    def _flush(self, channel, pending: list[_Pending]) -> None:
        """Apply the batch, dead-letter what the store refused, then acknowledge it all."""
        if not pending:
            return
        newest: dict[tuple[str, str], Update] = {}  # per kind of update and product
        for update in (u for p in pending for u in p.updates):
            key = (update.kind, update.product_id)
            if key not in newest or update.version > newest[key].version:
                newest[key] = update
        self._throttle(len(newest))
        outcome = {}
        for kind in sorted({kind for kind, _ in newest}):
            outcome.update({(kind, pid): result for pid, result in self._apply(
                {pid: u for (k, pid), u in newest.items() if k == kind}).items()})
        for item in pending:
            for line, reason in item.bad_lines:
                self._dead_letter(channel, line, reason, item.message_id)
            for update in item.updates:
                key = (update.kind, update.product_id)
                result = outcome[key]
                if newest[key] is not update:  # a newer one came in the same batch
                    result = ALREADY_APPLIED if update.version == newest[key].version \
                        else SUPERSEDED
                if result.startswith(REJECTED):
                    self._dead_letter(channel, update.line, result, item.message_id)
                else:
                    self.counts[result] += 1
            channel.basic_ack(item.delivery_tag)
        self.last_ack_at = time.time()
        log.info("updates so far: %s", self.counts)
        pending.clear()

    def _apply(self, updates: dict[str, Update]) -> dict[str, str]:
        """The store's outcome for every update, retrying what failed for a passing reason
        (unreachable, overloaded) until it succeeds or the updater is stopped."""
        outcome: dict[str, str] = {}
        todo = {pid: (u.version, u.fields) for pid, u in updates.items()}
        version_field = next(iter(updates.values())).version_field
        delay = RETRY_FIRST_SECONDS
        while todo:
            try:
                outcome.update(self._store_call(
                    self.store.update_if_newer, todo, version_field=version_field,
                    chunk_size=self.settings.updater_batch_size))
            except Exception as err:  # noqa: BLE001 (the two clients raise different kinds)
                if self.store.is_transient(err):
                    log.warning("store unavailable (%s)", err)
                else:  # a request the store will never take: find the products at fault
                    log.warning("the store refused a batch (%s): applying it one by one", err)
                    outcome.update(self._one_by_one(todo, version_field))
            todo = {pid: todo[pid] for pid in todo if outcome.get(pid, TRANSIENT) == TRANSIENT}
            if todo:
                if self.stopping:
                    raise _Interrupted()
                log.warning("%d updates not applied yet; retrying in %.0f s", len(todo), delay)
                self._sleep(delay)
                delay = min(RETRY_MAX_SECONDS, delay * 2)
        return outcome

    def _one_by_one(self, todo: dict[str, tuple[int, dict]],
                    version_field: str) -> dict[str, str]:
        outcome = {}
        for product_id, update in todo.items():
            try:
                outcome.update(self._store_call(self.store.update_if_newer,
                                                {product_id: update},
                                                version_field=version_field))
            except Exception as err:  # noqa: BLE001 (as above)
                outcome[product_id] = TRANSIENT if self.store.is_transient(err) else \
                    f"{REJECTED}: {type(err).__name__}: {err}"
        return outcome

    def _throttle(self, batch: int) -> None:
        """Wait as needed so the store never sees more than the configured rate. Idle time
        builds no credit: after an idle hour the next batches still go at the rate."""
        now = self._clock()
        start = max(now, self._ready_at)
        if start > now:
            self._sleep(start - now)
        self._ready_at = start + batch / self.settings.updater_max_docs_per_second

    def _dead_letter(self, channel, line: bytes, reason: str, message_id: str | None) -> None:
        exchange, _ = dead_letter_names(self.settings.predictions_queue)
        log.error("dead-lettering a prediction: %s", reason)
        headers = {"x-prodcat-reason": reason[:1000]}
        if message_id:
            headers["x-prodcat-message-id"] = message_id
        channel.basic_publish(exchange=exchange, routing_key="", body=line,
                              properties=pika.BasicProperties(
                                  delivery_mode=pika.DeliveryMode.Persistent, headers=headers))
        self.counts["dead_lettered"] += 1


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m broker.updater", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                        help="stop after this long without a message (default: run until stopped)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    updater = Updater(ProductStore.from_settings(settings), settings)
    signal.signal(signal.SIGTERM, updater.stop)
    signal.signal(signal.SIGINT, updater.stop)
    log.info("consuming %s at most %.0f docs/s", settings.predictions_queue,
             settings.updater_max_docs_per_second)
    emit_result(updater.run(args.exit_when_idle))


if __name__ == "__main__":
    main()
