"""The broker objects prodcat relies on, declared the same way by every client."""
from __future__ import annotations

import pika


def connect(amqp_url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(amqp_url)
    params.heartbeat = 60
    params.blocked_connection_timeout = 300
    return pika.BlockingConnection(params)


def dead_letter_names(queue: str) -> tuple[str, str]:
    """The exchange and queue where updates the store rejected end up."""
    return f"{queue}.dead-letter", f"{queue}.dead-letter"


def declare_predictions_queue(channel, queue: str) -> None:
    """A durable queue (persistent messages survive a broker restart) and its dead-letter queue."""
    exchange, dead_queue = dead_letter_names(queue)
    channel.exchange_declare(exchange=exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(queue=dead_queue, durable=True)
    channel.queue_bind(queue=dead_queue, exchange=exchange)
    channel.queue_declare(queue=queue, durable=True,
                          arguments={"x-dead-letter-exchange": exchange})
