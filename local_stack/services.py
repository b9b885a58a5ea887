"""Start and stop the local product store and RabbitMQ node."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from osmem_server import OsmemServer

log = logging.getLogger("prodcat.local_stack")


class ServiceError(RuntimeError):
    """A local service could not be started."""


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_store(port: int = 9200) -> OsmemServer:
    """An osmem server on ``127.0.0.1:port``; it stops when this process ends."""
    server = OsmemServer.start(addr=f"127.0.0.1:{port}", startup_timeout=60)
    log.info("product store (osmem %s) at %s", server.version, server.url)
    return server


# The node runs as the rabbitmq user, who may not be able to enter the checkout
# (a private temporary directory, say), so its data lives under its own home.
NODES_DIR = Path("/var/lib/rabbitmq/prodcat-nodes")


@dataclass
class RabbitNode:
    """A RabbitMQ node of its own (name, ports, data dir) beside any system one."""

    port: int = 5672
    dist_port: int = 25672
    name: str = "prodcat"

    @property
    def base_dir(self) -> Path:
        return NODES_DIR / self.name

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict:
        return {**os.environ,
                "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1"}

    def is_running(self) -> bool:
        check = subprocess.run(
            ["rabbitmq-diagnostics", "-n", self.node, "-q", "check_port_connectivity"],
            env=self._env(), capture_output=True, text=True)
        return check.returncode == 0

    def start(self, timeout: float = 90) -> None:
        if not shutil.which("rabbitmq-server"):
            raise ServiceError("rabbitmq-server is not installed: run `make install` "
                               "(apt-get install rabbitmq-server)")
        if self.is_running():
            log.info("RabbitMQ node %s already running on port %d", self.node, self.port)
            return
        for sub in ("mnesia", "log"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.base_dir)], check=True)
        subprocess.run(["rabbitmq-server", "-detached"], env=self._env(), check=True,
                       capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                log.info("RabbitMQ node %s up on port %d", self.node, self.port)
                return
            time.sleep(1)
        raise ServiceError(f"RabbitMQ node {self.node} did not come up in {timeout:.0f} s; "
                           f"see {self.base_dir / 'log'}")

    def stop(self, remove_data: bool = False) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self._env(),
                       capture_output=True)
        if remove_data:
            shutil.rmtree(self.base_dir, ignore_errors=True)
