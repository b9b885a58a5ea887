"""How the page size of a whole-index read (the dump's) sets its time on the local store.

    .venvs/ml/bin/python -m benchmarks.dump_pages [--products 100000] [--pages 1000,5000,10000]
        [--orders id,index]

Bulk-loads the scale generator's products (as the end-to-end benchmark does) into an osmem
store of its own, then reads every product with ``ProductStore.iter_products`` (a point in
time, ``search_after``) at each page size and in each order (``id``: sorted by product id;
``index``: the point in time's own document order, the dump's read); prints the store's
memory once loaded (its peak RSS: osmem holds the index in memory), then per read seconds,
products/s and each time as a ratio to the first read's.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from benchmarks.end_to_end import rss_of
from catalog_data.generator import ScaleGenerator
from catalog_data.taxonomy import Taxonomy
from local_stack.services import free_port, start_store
from shared_config.settings import Settings
from store.client import READ_ORDERS, ProductStore
from store.load import load_products


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dump_pages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--pages", default="1000,5000,10000",
                        help="page sizes to read with, comma-separated")
    parser.add_argument("--orders", default="id,index",
                        help=f"read orders, comma-separated, of {sorted(READ_ORDERS)}")
    args = parser.parse_args(argv)
    try:
        pages = [int(size) for size in args.pages.split(",")]
    except ValueError:
        parser.error(f"--pages {args.pages!r}: page sizes are whole numbers")
    orders = [order for order in args.orders.split(",") if order]
    if args.products < 1 or not pages or min(pages) < 1:
        parser.error("--products and every page size must be positive")
    if not orders or set(orders) - set(READ_ORDERS):
        parser.error(f"--orders {args.orders!r}: choose from {sorted(READ_ORDERS)}")
    port = free_port()
    server = start_store(port)
    try:
        settings = dataclasses.replace(Settings.from_env({}),
                                       store_url=f"http://127.0.0.1:{port}")
        store = ProductStore.from_settings(settings)
        started = time.monotonic()
        load_products(store, ScaleGenerator(Taxonomy.shopify(), seed=0).products(args.products),
                      recreate=True)
        store.refresh()
        print(f"{args.products:,} generated products loaded in "
              f"{time.monotonic() - started:.1f} s; the store's peak memory "
              f"{rss_of(server.pid) or 0:,.0f} MiB", flush=True)
        first = None
        for size in pages:
            for order in orders:
                started = time.monotonic()
                read = len({p["id"] for p in store.iter_products(page_size=size, order=order)})
                seconds = time.monotonic() - started
                first = first or seconds
                print(f"pages of {size:>7,} by {order:<6}: {read:,} products in {seconds:6.1f} s, "
                      f"{read / seconds:>9,.0f}/s, time {seconds / first:.2f}x the first",
                      flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
