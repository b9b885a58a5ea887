"""Load a catalogue into the product store (bulk, with progress).

``python -m store.load --demo 3000 [--seed 7] [--recreate]`` generates the demo catalogue;
``python -m store.load --jsonl products.jsonl.gz [--rejects FILE] [--max-bad-ratio 0.05]``
loads products from a file. Every good line is loaded; a line that is not a
product (not JSON, not UTF-8, no id, ...) or that the store refuses goes to the
rejects file with its line number and reason (default: beside the input,
``<input>.rejects.jsonl``), and the load fails — after loading the rest — only
when more than ``--max-bad-ratio`` of the lines were rejected, like the
preprocessing job's quarantine. Hidden fields (names starting with ``_``, such
as the true category) never reach the store; ``--ground-truth FILE`` keeps them
in a JSON-lines file instead.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
from collections.abc import Iterable, Iterator

from shared_config.cli import emit_result, setup_logging
from shared_config.storage import to_line
from store import demo_catalog
from store.client import ProductStore

log = logging.getLogger("prodcat.load")
MAX_ID_BYTES = 512  # the store's limit on a document id
RECORD_SAMPLE_CHARS = 2_000  # of a rejected line, enough to recognise it
LOGGED_REJECTS = 20
# Products a bulk request of the load. Bigger requests load a little faster, and on osmem they
# decide how fast the store takes later writes: after a load in requests of 1,000, the
# updater's first writes to a 100,000-product index ran at 150-500 documents/s; after a load
# in requests of 5,000, at about 1,800/s (``python -m benchmarks.store_writes --load-chunks``).
# About 5 MB of products a request, within Elasticsearch's advice for bulk requests (a few MB
# to tens of MB).
LOAD_CHUNK = 5000


class BadProduct(ValueError):
    """A product that cannot be loaded (not JSON, not an object, no id)."""


class Rejects:
    """What could not be loaded, one JSON line each: ``where``, ``reason``, ``record``."""

    def __init__(self, path: str | None = None):
        self.path, self.count = path, 0
        self._handle = None

    def add(self, where: str, reason: str, record: str) -> None:
        self.count += 1
        if self.count <= LOGGED_REJECTS:
            log.warning("rejected %s: %s", where, reason)
        if self.path:
            if self._handle is None:
                self._handle = open(self.path, "w", encoding="ascii")  # noqa: SIM115
            self._handle.write(to_line({"where": where, "reason": reason,
                                        "record": record[:RECORD_SAMPLE_CHARS]}) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def parse_product(line: bytes) -> dict:
    """One line as a product, or BadProduct with the reason."""
    try:
        product = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BadProduct(f"not UTF-8: {err}") from None
    except (ValueError, RecursionError) as err:  # bad JSON, a number of 4,300+ digits, nesting
        raise BadProduct(f"not JSON: {type(err).__name__}: {err}") from None
    if not isinstance(product, dict):
        raise BadProduct(f"not a JSON object but {type(product).__name__}")
    product_id = product.get("id")
    if not isinstance(product_id, str) or not product_id.strip():
        raise BadProduct("a product needs a non-empty string 'id'")
    if len(product_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise BadProduct(f"the 'id' is longer than {MAX_ID_BYTES} bytes")
    return product


def read_jsonl(path: str, rejects: Rejects | None = None) -> Iterator[dict]:
    """The products of a JSON-lines file (``.gz`` too). A bad line goes to ``rejects``
    with its line number and reason; without ``rejects`` it raises BadProduct."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield parse_product(line)
            except BadProduct as err:
                if rejects is None:
                    raise BadProduct(f"{path}:{line_number}: {err}") from None
                rejects.add(f"{path}:{line_number}", str(err),
                            line.decode("utf-8", "backslashreplace").rstrip("\n"))


def load_products(store: ProductStore, products: Iterable[dict], recreate: bool = False,
                  ground_truth: str | None = None, chunk_size: int = LOAD_CHUNK,
                  rejects: Rejects | None = None) -> dict:
    """Index the products; a product the store refuses goes to ``rejects`` (without
    ``rejects``, the load raises StoreError)."""
    store.create_index(recreate=recreate)
    truth = open(ground_truth, "w", encoding="utf-8") if ground_truth else None  # noqa: SIM115
    loaded = 0
    try:
        iterator = iter(products)
        while chunk := list(itertools.islice(iterator, chunk_size)):
            visible = []
            for product in chunk:
                hidden = {k: v for k, v in product.items() if k.startswith("_")}
                if truth and hidden:
                    truth.write(json.dumps({"id": product["id"], **hidden}) + "\n")
                visible.append({k: v for k, v in product.items() if not k.startswith("_")})
            if rejects is None:
                loaded += store.index_products(visible, chunk_size=chunk_size)
            else:
                done, refused = store.index_some(visible, chunk_size=chunk_size)
                loaded += done
                by_id = {p["id"]: p for p in visible}
                for product_id, reason in refused.items():
                    rejects.add(f"product {product_id!r}", f"the store refused it: {reason}",
                                to_line(by_id.get(product_id, {"id": product_id})))
            log.info("loaded %d products", loaded)
    finally:
        if truth:
            truth.close()
    store.refresh()
    return {"loaded": loaded, "index": store.index, "in_store": store.count(),
            **({"rejected": rejects.count} if rejects is not None else {})}


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m store.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", type=int, metavar="N", help="generate N demo products")
    source.add_argument("--jsonl", help="a JSON-lines file (optionally .gz) of products")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--recreate", action="store_true", help="drop the index first")
    parser.add_argument("--ground-truth", help="write hidden fields to this JSON-lines file")
    parser.add_argument("--rejects", help="where rejected lines go (default: "
                                          "<input>.rejects.jsonl)")
    parser.add_argument("--max-bad-ratio", type=float, default=0.05,
                        help="fail when more than this share of the lines is rejected "
                             "(default 0.05)")
    args = parser.parse_args(argv)
    if not 0 <= args.max_bad_ratio <= 1:
        parser.error("--max-bad-ratio must be between 0 and 1")
    store = ProductStore.from_settings()
    if args.demo is not None:
        emit_result(load_products(store, demo_catalog.generate(args.demo, seed=args.seed),
                                  args.recreate, args.ground_truth))
        return
    rejects = Rejects(args.rejects or args.jsonl + ".rejects.jsonl")
    try:
        result = load_products(store, read_jsonl(args.jsonl, rejects), args.recreate,
                               args.ground_truth, rejects=rejects)
    except (OSError, EOFError) as err:  # a missing or truncated file: what came before is in
        parser.exit(1, f"error: cannot read {args.jsonl}: {err} (the lines before it were "
                       "loaded)\n")
    finally:
        rejects.close()
    result["rejects_file"] = rejects.path if rejects.count else None
    emit_result(result)
    lines = result["loaded"] + rejects.count
    if lines == 0:
        parser.exit(1, f"error: {args.jsonl} holds no products\n")
    if rejects.count / lines > args.max_bad_ratio:
        parser.exit(1, f"error: {rejects.count} of {lines} lines were rejected "
                       f"({rejects.count / lines:.1%}, more than the allowed "
                       f"{args.max_bad_ratio:.1%}); the others are loaded; see {rejects.path}\n")


if __name__ == "__main__":
    main()
