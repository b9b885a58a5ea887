"""The broker objects prodcat relies on, declared the same way by every client.

- ``<queue>``: durable; messages are persistent, so they survive a broker restart.
  At most ``PRODCAT_PREDICTIONS_QUEUE_MAX_LENGTH`` messages (default 200,000) (of up to ``--per-message`` predictions
  each) wait in it; beyond that the broker refuses new ones (``reject-publish``):
  the publisher's confirms come back negative and it backs off until the updater
  catches up, so nothing is dropped. No TTL: a prediction waits however long the
  store is away.
- ``<queue>.dead-letter`` (a fanout exchange and a durable queue of that name):
  what the updater could not apply, each message with its reason in the
  ``x-prodcat-reason`` header, kept until someone looks.

RabbitMQ refuses to re-declare a queue with other arguments; a queue made by an
older prodcat must be deleted (``rabbitmqctl delete_queue``) once it is empty.
"""
from __future__ import annotations

import pika


class TopologyMismatch(RuntimeError):
    """The broker holds a queue of that name declared differently."""


def connect(amqp_url: str, heartbeat: int = 60) -> pika.BlockingConnection:
    """A blocking connection; ``heartbeat`` seconds (``PRODCAT_AMQP_HEARTBEAT``): a peer
    silent for longer is taken for gone."""
    params = pika.URLParameters(amqp_url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 300
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def dead_letter_names(queue: str) -> tuple[str, str]:
    """The exchange and queue where updates the store rejected end up."""
    return f"{queue}.dead-letter", f"{queue}.dead-letter"


def declare_predictions_queue(channel, queue: str, max_length: int) -> None:
    """The predictions queue (at most ``max_length`` messages) and its dead-letter
    exchange and queue."""
    exchange, dead_queue = dead_letter_names(queue)
    channel.exchange_declare(exchange=exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(queue=dead_queue, durable=True)
    channel.queue_bind(queue=dead_queue, exchange=exchange)
    try:
        channel.queue_declare(queue=queue, durable=True,
                              arguments={"x-dead-letter-exchange": exchange,
                                         "x-max-length": max_length,
                                         "x-overflow": "reject-publish"})
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code != 406:  # PRECONDITION_FAILED: the queue exists with other arguments
            raise
        raise TopologyMismatch(
            f"queue {queue!r} exists with other arguments ({err.reply_text}); once it is empty, "
            f"delete it (rabbitmqctl delete_queue {queue}; for the local stack `make clean` "
            f"does it) and start again") from None
