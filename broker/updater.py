"""The updater: consumes predictions from RabbitMQ and applies them to the store.

Messages are gathered into bulk partial updates (up to ``PRODCAT_UPDATER_BATCH_SIZE``)
and applied no faster than ``PRODCAT_UPDATER_MAX_DOCS_PER_SECOND``. A message is
acknowledged only after the store accepted its update; one the store rejects, or
one that is not a prediction, goes to the dead-letter queue with the reason in
its ``x-prodcat-reason`` header. SIGTERM/SIGINT finish the current batch first.

``python -m broker.updater``                         runs until stopped
``python -m broker.updater --exit-when-idle 10``     stops after 10 s without messages
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from dataclasses import dataclass

import pika

from broker.topology import connect, dead_letter_names, declare_predictions_queue
from shared_config.cli import emit_result, setup_logging
from shared_config.settings import Settings
from store.client import ProductStore

log = logging.getLogger("prodcat.updater")
POLL_SECONDS = 0.5


class BadMessage(ValueError):
    """A message body that is not a prediction."""


def to_update(body: bytes) -> tuple[str, dict]:
    """A message body to ``(product_id, fields to set on the product)``."""
    try:
        prediction = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadMessage(f"not JSON: {err}") from None
    if not isinstance(prediction, dict):
        raise BadMessage("not a JSON object")
    product_id, run_id = prediction.get("id"), prediction.get("run_id")
    if not isinstance(product_id, str) or not product_id or not isinstance(run_id, str):
        raise BadMessage("a prediction needs string 'id' and 'run_id'")
    fields = {k: v for k, v in prediction.items() if k not in ("id", "run_id")}
    return product_id, {"prediction": fields, "prediction_run_id": run_id}


@dataclass
class _Pending:
    delivery_tag: int
    product_id: str
    fields: dict
    body: bytes


class Updater:
    def __init__(self, store: ProductStore, settings: Settings):
        self.store = store
        self.settings = settings
        self.stopping = False
        self.applied = self.dead_lettered = 0
        self._started = time.monotonic()

    def stop(self, *_):
        log.info("stopping after the current batch")
        self.stopping = True

    def run(self, exit_when_idle: float | None = None) -> dict:
        connection = connect(self.settings.amqp_url)
        channel = connection.channel()
        declare_predictions_queue(channel, self.settings.predictions_queue)
        channel.confirm_delivery()  # a dead-lettered copy is confirmed before its ack
        channel.basic_qos(prefetch_count=self.settings.updater_batch_size)
        pending: list[_Pending] = []
        idle_since = time.monotonic()
        try:
            for method, _, body in channel.consume(self.settings.predictions_queue,
                                                   inactivity_timeout=POLL_SECONDS):
                if method is None:
                    self._flush(channel, pending)
                    if self.stopping or (exit_when_idle is not None
                                         and time.monotonic() - idle_since > exit_when_idle):
                        break
                    continue
                idle_since = time.monotonic()
                try:
                    product_id, fields = to_update(body)
                except BadMessage as err:
                    self._dead_letter(channel, method.delivery_tag, body, str(err))
                    continue
                pending.append(_Pending(method.delivery_tag, product_id, fields, body))
                if len(pending) >= self.settings.updater_batch_size or self.stopping:
                    self._flush(channel, pending)
                if self.stopping:
                    break
            self._flush(channel, pending)
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()
        return {"applied": self.applied, "dead_lettered": self.dead_lettered}

    def _flush(self, channel, pending: list[_Pending]) -> None:
        if not pending:
            return
        self._throttle(len(pending))
        rejected = self._apply_with_retry(pending)
        for item in pending:
            if item.product_id in rejected:
                self._dead_letter(channel, item.delivery_tag, item.body, rejected[item.product_id])
            else:
                channel.basic_ack(item.delivery_tag)
                self.applied += 1
        log.info("applied %d updates so far (%d dead-lettered)", self.applied, self.dead_lettered)
        pending.clear()

    def _apply_with_retry(self, pending: list[_Pending], attempts: int = 6) -> dict[str, str]:
        """Retry the whole batch while the store is unreachable; nothing is acked meanwhile."""
        for attempt in range(attempts):
            try:
                return self.store.update_partial((p.product_id, p.fields) for p in pending)
            except Exception as err:  # connection errors differ between the two clients
                if attempt == attempts - 1:
                    raise
                delay = min(30, 2 ** attempt)
                log.warning("store unavailable (%s); retrying in %d s", err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _throttle(self, batch: int) -> None:
        """Sleep as needed so the store never sees more than the configured rate."""
        earliest = self._started + (self.applied + batch) / self.settings.updater_max_docs_per_second
        delay = earliest - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _dead_letter(self, channel, delivery_tag: int, body: bytes, reason: str) -> None:
        exchange, _ = dead_letter_names(self.settings.predictions_queue)
        log.error("dead-lettering a message: %s", reason)
        channel.basic_publish(exchange=exchange, routing_key="", body=body,
                              properties=pika.BasicProperties(
                                  delivery_mode=pika.DeliveryMode.Persistent,
                                  headers={"x-prodcat-reason": reason[:1000]}))
        channel.basic_ack(delivery_tag)
        self.dead_lettered += 1


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
