"""The whole local stack as one context manager: store, broker node and updater; and
Airflow's execution API, for DAG runs whose tasks run side by side."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from local_stack.services import RabbitNode, ServiceError, free_port, start_store
from shared_config.settings import Settings, mask_url

log = logging.getLogger("prodcat.local_stack")
REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = REPO_ROOT / ".prodcat"


def _port(url: str, default: int) -> int:
    return urlparse(url).port or default


def start_updater(env: dict, log_path: Path, code_dir: Path = REPO_ROOT) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "ab")  # noqa: SIM115 (the updater writes it until it stops)
    return subprocess.Popen([sys.executable, "-m", "broker.updater"], cwd=code_dir,
                            env={**env, "PYTHONPATH": str(code_dir)},
                            stdout=handle, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def running_stack(settings: Settings, state_dir: Path = STATE_DIR, rabbit_name: str = "prodcat",
                  code_dir: Path = REPO_ROOT):
    """Start the store, a RabbitMQ node and the updater (``code_dir``'s); stop them all on
    exit."""
    if urlparse(settings.store_url).hostname not in ("127.0.0.1", "localhost"):
        raise ServiceError(f"PRODCAT_STORE_URL={mask_url(settings.store_url)}: the local stack serves "
                           "the store on 127.0.0.1 only")
    amqp_port = _port(settings.amqp_url, 5672)
    store = start_store(_port(settings.store_url, 9200))
    node = RabbitNode(port=amqp_port, dist_port=amqp_port + 20000, name=rabbit_name)
    updaters: list[subprocess.Popen] = []
    try:
        node.start()
        env = {**os.environ, **settings.as_env()}
        for number in range(settings.updaters):
            name = "updater.log" if number == 0 else f"updater-{number + 1}.log"
            updaters.append(start_updater(env, state_dir / "logs" / name, code_dir))
        time.sleep(0.5)
        if any(updater.poll() is not None for updater in updaters):
            raise ServiceError(f"an updater exited at start; see {state_dir / 'logs'}/updater*.log")
        yield {"store": store, "rabbit": node, "updater": updaters[0], "updaters": updaters}
    finally:
        for updater in updaters:
            stop_process(updater)
        node.stop()
        store.close()


# Each LocalExecutor worker runs one task at a time: two are enough for this DAG's widest
# point (the model beside the baseline task) on a machine of a few cores, and each idle
# worker is a process of its own.
EXECUTOR_WORKERS = 2


@contextlib.contextmanager
def execution_api(env: dict, airflow: str, log_path: Path, timeout: float = 120):
    """Airflow's execution API (``airflow api-server --apps execution``) on a free loopback
    port, for a DAG run whose tasks the LocalExecutor runs side by side (their workers
    report to it); yields the environment that points Airflow there. Stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/execution/"
    env = {**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": url,
           "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__CORE__PARALLELISM": str(EXECUTOR_WORKERS)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as handle:
        server = subprocess.Popen([airflow, "api-server", "--apps", "execution", "--host",
                                   "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise ServiceError(f"Airflow's API server exited at start; see {log_path}")
            try:
                with urllib.request.urlopen(url + "health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"Airflow's API server did not answer on {url} within "
                                   f"{timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        log.info("Airflow execution API at %s", url)
        yield env
    finally:
        stop_process(server)
