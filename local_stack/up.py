"""``make up``: keep the local stack (store, RabbitMQ node, updater, labelling UI) running
until Ctrl-C.

With it up, ``make airflow-ui`` can run ``catalog_train`` from the UI's trigger
form. The store is in memory: load a catalogue first (``--demo N``), and expect
it gone once the stack stops.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading

from local_stack.stack import running_stack
from local_stack.ui import running_ui
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
    parser.add_argument("--ui-port", type=int, default=8090,
                        help="serve the labelling UI here (0: do not start it)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with running_stack(settings):
        if args.demo:
            load_products(ProductStore.from_settings(settings), demo_catalog.generate(args.demo),
                          recreate=True)
        with contextlib.ExitStack() as extra:
            if args.ui_port:
                env = {**os.environ, **settings.as_env()}
                ui = extra.enter_context(running_ui(env, args.ui_port))
                log.info("labelling UI at %s (user %s, password in %s)", ui["url"], ui["user"],
                         ui["password_file"])
            log.info("local stack up: %s; Ctrl-C to stop", describe(settings))
            stop.wait()
    log.info("local stack stopped")


if __name__ == "__main__":
    main()
