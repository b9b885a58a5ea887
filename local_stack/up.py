"""``make up``: keep the local stack (store, RabbitMQ node, updater) running until Ctrl-C.

With it up, ``make airflow-ui`` can run ``catalog_train`` from the UI's trigger
form. The store is in memory: load a catalogue first (``--demo N``), and expect
it gone once the stack stops.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from local_stack.stack import running_stack
from shared_config.cli import setup_logging
from shared_config.settings import Settings, mask_url
from store import demo_catalog
from store.client import ProductStore
from store.load import load_products

log = logging.getLogger("prodcat.local_stack")


def describe(settings: Settings) -> str:
    """Where the stack's services are, without their passwords."""
    return f"store {mask_url(settings.store_url)}, broker {mask_url(settings.amqp_url)}"


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m local_stack.up", description=__doc__)
    parser.add_argument("--demo", type=int, default=3000, metavar="N",
                        help="load N demo products once the store is up (0: none)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with running_stack(settings):
        if args.demo:
            load_products(ProductStore.from_settings(settings), demo_catalog.generate(args.demo),
                          recreate=True)
        log.info("local stack up: %s; Ctrl-C to stop", describe(settings))
        stop.wait()
    log.info("local stack stopped")


if __name__ == "__main__":
    main()
