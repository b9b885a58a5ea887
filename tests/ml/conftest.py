"""Real services for the tests: an osmem store and a RabbitMQ node of their own."""
from __future__ import annotations

import uuid

import pytest

from local_stack.services import RabbitNode, start_store
from shared_config.settings import Settings
from tests.helpers import free_port


@pytest.fixture(scope="session")
def store_server():
    server = start_store(free_port())
    yield server
    server.close()


@pytest.fixture(scope="session")
def rabbit():
    port = free_port()
    node = RabbitNode(port=port, dist_port=free_port(), name=f"prodcat-test-{port}")
    node.start()
    yield node
    node.stop(remove_data=True)


@pytest.fixture
def settings(store_server, tmp_path, monkeypatch) -> Settings:
    """Settings for one test: its own prefix, index and queue on the shared services."""
    suffix = uuid.uuid4().hex[:8]
    env = {"PRODCAT_PREFIX": str(tmp_path / "prefix"), "PRODCAT_STORE_URL": store_server.url,
           "PRODCAT_STORE_INDEX": f"products-{suffix}", "PRODCAT_RUNS_INDEX": f"runs-{suffix}",
           "PRODCAT_PREDICTIONS_QUEUE": f"predictions-{suffix}",
           "PRODCAT_UPDATER_BATCH_SIZE": "50"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings.from_env()


@pytest.fixture
def broker_settings(settings, rabbit, monkeypatch) -> Settings:
    monkeypatch.setenv("PRODCAT_AMQP_URL", rabbit.url)
    return Settings.from_env()
