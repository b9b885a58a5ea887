"""Predictions to the store through RabbitMQ: the publisher and the updater (consumer)."""
