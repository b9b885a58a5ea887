"""The scale generator: N synthetic products over the real Shopify taxonomy, streamed.

Deterministic for a seed, constant memory however large N is (only a bounded
window of recent products is kept, to duplicate some across affiliates). The
products carry the noise real affiliate feeds have: missing fields, HTML and
entities in descriptions, odd unicode, very long fields, the same product under
several affiliates, and each affiliate's own category delimiter. The legacy rule
labeller (keyword rules derived from the taxonomy, covering part of it) labels
them; the true category is a hidden ``_true_category`` field.

``python -m catalog_data.generator --n 1000000 --out products.jsonl.gz``
``python -m catalog_data.generator --n 100000 --load``  (straight into the store)
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
import random
from collections import deque
from collections.abc import Iterator

from catalog_data.rules import SEPARATOR, Rule, RuleLabeller, tokens
from catalog_data.taxonomy import Taxonomy
from shared_config.cli import emit_result, setup_logging

log = logging.getLogger("prodcat.generator")
AFFILIATES = (("shopmax", " > "), ("dealsdirect", " // "), ("bargainbin", "|"),
              ("megastore", " / "), ("eurofeed", " › "))
ADJECTIVES = ("premium", "classic", "new", "deluxe", "compact", "eco", "pro", "vintage", "mini",
              "heavy-duty", "portable", "organic", "smart", "limited edition")
BRANDS = tuple(f"{a}{b}" for a in ("Nor", "Vel", "Sky", "Ter", "Lum", "Cas", "Ori", "Zen")
               for b in ("tex", "ora", "line", "ware", "gear", "co", "ly", "mark"))
ODD_UNICODE = ("\u200b", "\u00a0", "e\u0301", "\uff21\uff22", "\u2122", "\U0001f525", "\u202e")
RULE_COVERAGE = 0.6  # share of leaf categories the legacy rules know
DUPLICATE_RATE, WINDOW = 0.05, 1000


def taxonomy_rules(taxonomy: Taxonomy, seed: int = 0) -> RuleLabeller:
    """Keyword rules for part of the taxonomy: a leaf's last one to three name words."""
    rng = random.Random(f"rules-{seed}")
    rules = []
    for leaf in taxonomy.leaves:
        if rng.random() < RULE_COVERAGE:
            words = tokens(leaf.split(SEPARATOR)[-1])
            rules.append(Rule((" ".join(words[-rng.randint(1, 3):]),), leaf, ("title",)))
    return RuleLabeller(rules)


class ScaleGenerator:
    def __init__(self, taxonomy: Taxonomy, seed: int = 0):
        self.taxonomy = taxonomy
        self.seed = seed
        self.labeller = taxonomy_rules(taxonomy, seed)
        # Real catalogues are imbalanced: a few categories hold most products.
        self._weights = list(itertools.accumulate(
            1 / (rank + 1) ** 0.8 for rank in range(len(taxonomy.leaves))))
        order = list(taxonomy.leaves)
        random.Random(f"order-{seed}").shuffle(order)
        self._leaves = order

    def products(self, n: int) -> Iterator[dict]:
        if n < 0:
            raise ValueError("n must not be negative")
        rng = random.Random(self.seed)
        recent: deque[dict] = deque(maxlen=WINDOW)
        for i in range(n):
            if recent and rng.random() < DUPLICATE_RATE:
                product = self._relist(rng.choice(recent), i, rng)
            else:
                product = self._new(i, rng)
                recent.append(product)
            product["rule_labels"] = self.labeller.labels(product)
            yield dict(product)  # a copy: the caller may change it, the window must not

    def _new(self, i: int, rng: random.Random) -> dict:
        leaf = rng.choices(self._leaves, cum_weights=self._weights)[0]
        name = leaf.split(SEPARATOR)[-1]
        affiliate, delimiter = rng.choice(AFFILIATES)
        brand = rng.choice(BRANDS)
        title = f"{brand} {rng.choice(ADJECTIVES)} {name} {rng.choice('ABCDEFGH')}{rng.randint(10, 999)}"
        description = (f"<p>The {name.lower()} &amp; more from <b>{brand}</b>.</p>"
                       f"<ul><li>{rng.choice(ADJECTIVES)}</li><li>ships&nbsp;fast</li></ul>")
        product = {
            "id": f"{affiliate}-{self.seed}-{i:09d}",
            "title": title,
            "description": description,
            "brand": brand,
            "raw_category": self._raw_category(leaf, delimiter, rng),
            "gender": rng.choice(("", "unisex", "women", "men", "kids")),
            "size": rng.choice(("", "S", "M", "L", "XL", "42", "one size")),
            "price": round(rng.lognormvariate(3.4, 1.0), 2),
            # No image: a generated catalogue must never send a run to hosts that do not exist.
            "image": "",
            "exclusive_label": "",
            "label_source": "",
            "_true_category": leaf,
        }
        return self._add_noise(product, rng)

    def _relist(self, original: dict, i: int, rng: random.Random) -> dict:
        """The same product from another affiliate: new id, its own formatting."""
        affiliate, delimiter = rng.choice(AFFILIATES)
        copy = dict(original, id=f"{affiliate}-{self.seed}-{i:09d}")
        if isinstance(copy.get("title"), str):
            copy["title"] = rng.choice((str.upper, str.lower, str.title))(copy["title"])
        copy["raw_category"] = self._raw_category(copy["_true_category"], delimiter, rng)
        if isinstance(copy.get("price"), float):
            copy["price"] = round(copy["price"] * rng.uniform(0.9, 1.1), 2)
        return copy

    @staticmethod
    def _raw_category(leaf: str, delimiter: str, rng: random.Random) -> str:
        parts = leaf.split(SEPARATOR)
        parts = parts[: rng.randint(1, len(parts))]
        path = delimiter.join(parts)
        return path.lower() if rng.random() < 0.3 else path

    @staticmethod
    def _add_noise(product: dict, rng: random.Random) -> dict:
        roll = rng.random()
        if roll < 0.10:
            product[rng.choice(("description", "brand", "raw_category", "size"))] = None
        elif roll < 0.15:
            del product[rng.choice(("gender", "price", "description"))]
        elif roll < 0.20:
            product["title"] = rng.choice(ODD_UNICODE).join(product["title"].split(" "))
        elif roll < 0.22:
            product["description"] = (product["description"] + " ") * rng.randint(200, 400)
        elif roll < 0.24:
            product["title"] = f"<span>{product['title']}</span> &quot;SALE&quot; &#8211; 50%"
        return product


def main(argv=None) -> None:
    from store.client import ProductStore
    from store.load import load_products

    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m catalog_data.generator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, required=True, help="how many products")
    parser.add_argument("--seed", type=int, default=0)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="write gzipped JSON lines here (ground truth beside it)")
    target.add_argument("--load", action="store_true", help="load into the store (bulk)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    products = ScaleGenerator(Taxonomy.shopify(), args.seed).products(args.n)
    if args.load:
        truth = f"ground_truth-seed{args.seed}.jsonl"
        emit_result(load_products(ProductStore.from_settings(), products, recreate=True,
                                  ground_truth=truth))
        return
    written = 0
    truth_path = args.out.removesuffix(".gz").removesuffix(".jsonl") + ".ground_truth.jsonl.gz"
    with gzip.open(args.out, "wt", encoding="utf-8") as out, \
            gzip.open(truth_path, "wt", encoding="utf-8") as truth:
        for product in products:
            truth.write(json.dumps({"id": product["id"],
                                    "category": product.pop("_true_category")}) + "\n")
            out.write(json.dumps(product, ensure_ascii=False) + "\n")
            written += 1
            if written % 100_000 == 0:
                log.info("generated %d products", written)
    emit_result({"products": written, "out": args.out, "ground_truth": truth_path})


if __name__ == "__main__":
    main()
