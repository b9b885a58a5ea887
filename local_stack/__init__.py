"""The embedded services of a local run: the product store and the broker.

No Elasticsearch server can run on a developer machine without Docker, so the
local store is ``osmem-server`` (an in-memory OpenSearch-compatible engine from
PyPI); the broker is a real RabbitMQ node from Debian's ``rabbitmq-server``.
"""
