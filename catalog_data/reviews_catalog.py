"""The demo catalogue, built from real public data in the affiliate feed schema.

Each of the 23,486 women's clothing reviews becomes one affiliate listing of the
reviewed product (1,206 real products, so a product appears under several
affiliates, as in a real feed). Where a field has a real source it is used; where
it has none it is derived, deterministically, as the README's data table says:

- ``group_id``: the real product (its Clothing ID): the listings of one product share
  it, and with it their train/valid/test split;
- ``title`` / ``description``: the review's title and text (real; may be empty);
- ``raw_category``: the affiliate's own category path from the real Department and
  Class, in the affiliate's delimiter style, often coarser or uninformative;
- ``brand`` (synthetic: one invented brand per real product), ``price`` (synthetic:
  per-department median with per-product spread), ``gender`` (``women``: the data
  set is women's clothing), ``size`` (parsed from the review text, e.g. "ordered a
  small"), ``image`` (a Fashion-MNIST picture of the matching garment type, one per
  real product; none for types Fashion-MNIST lacks);
- ``rule_labels``: the legacy rule labeller; ``exclusive_label``: empty until the
  labelling oracle reveals some;
- feed glitches, as real feeds have them: one listing in 2,000 has its description
  repeated past any sane length, and one real product in 50 has a dead image link.

The true category (``Department > Class``) goes to a separate ground-truth file,
never to the store. ``python -m catalog_data.reviews_catalog`` builds it all.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import math
import re
from pathlib import Path

import pyarrow.parquet as pq

from catalog_data import fashion_mnist, sources
from catalog_data.rules import RuleLabeller, ancestors_and_self
from shared_config.cli import emit_result, setup_logging

log = logging.getLogger("prodcat.demo_catalog")
REVIEWS_MEMBER = sources.SOURCES["reviews"].members[0]
AFFILIATES = ("stylehub", "fashionfeed", "outletco")
BRANDS = ("Amberly", "Birchwood", "Calloway", "Daphne & Co", "Everlane Row", "Fernhill", "Goldie",
          "Harlow", "Isla Mae", "Juniper", "Kinsley", "Larkspur", "Maple & Moss", "Nora Vale",
          "Oakley Rose", "Pippa", "Quinn", "Rosalind", "Saffron", "Tilda", "Una", "Vesper",
          "Wren", "Xanthe", "Yara", "Zola", "Marigold", "Sable", "Indigo Lane", "Clementine")
MEDIAN_PRICE = {"Dresses": 118, "Tops": 68, "Bottoms": 88, "Jackets": 148, "Intimate": 48,
                "Trend": 98}
FASHION_MNIST_TYPE = {"Dresses": "Dress", "Knits": "T-shirt/top", "Blouses": "Shirt",
                      "Sweaters": "Pullover", "Fine gauge": "Pullover", "Pants": "Trouser",
                      "Jeans": "Trouser", "Casual bottoms": "Trouser", "Jackets": "Coat",
                      "Outerwear": "Coat"}
_SIZE = re.compile(r"\b(?:size|sized|ordered|bought|got|wear|wearing)\s+(?:an?\s+|the\s+|my\s+usual\s+)?"
                   r"(xxs|xs|xl|xxl|s|m|l|small|medium|large|petite|\d{1,2})\b", re.IGNORECASE)
_SIZE_NAMES = {"small": "S", "medium": "M", "large": "L", "petite": "P"}
GLITCH_EVERY, DEAD_LINK_EVERY = 2000, 50
FORMAT = 2  # raised when the built files change (2: group_id); an older build is made again


def stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def group_id(clothing_id: int) -> str:
    """The feed's id of the real product a listing shows (its listings share it)."""
    return f"clothing-{clothing_id}"


def raw_category(affiliate: str, department: str, klass: str, row: int) -> str:
    """The affiliate's own path: real department/class, each affiliate's style and depth."""
    if not department:
        return ""
    style = stable_int("depth", row) % 10
    if affiliate == "stylehub":
        return " > ".join(["Women", department] + ([klass] if style < 6 else []))
    if affiliate == "fashionfeed":
        return " // ".join(["womens", klass.lower()]) if style < 4 else "womens // new in"
    return "|".join(["apparel", department.lower()]) if style < 5 else "apparel|sale"


def size_from_text(text: str) -> str:
    match = _SIZE.search(text or "")
    if not match:
        return ""
    value = match.group(1).lower()
    return _SIZE_NAMES.get(value, value.upper())


def price(department: str, clothing_id: int, affiliate: str) -> float:
    median = MEDIAN_PRICE.get(department, 80)
    spread = (stable_int("price", clothing_id) % 1000) / 1000  # the same product, the same price
    markup = 1 + ((stable_int("markup", clothing_id, affiliate) % 11) - 5) / 100
    return round(median * math.exp((spread - 0.5) * 0.9) * markup, 2)


def build(out_dir: Path, cache: Path | None = None) -> dict:
    """Write ``catalog.jsonl.gz``, ``ground_truth.jsonl.gz``, ``categories.json`` and images."""
    table = pq.read_table(sources.fetch("reviews", cache)[REVIEWS_MEMBER]).to_pandas()
    images, image_labels = fashion_mnist.load("train", cache)
    by_type = {name: [i for i, label in enumerate(image_labels) if label == k]
               for k, name in enumerate(fashion_mnist.LABELS)}
    labeller = RuleLabeller.from_file()
    out_dir.mkdir(parents=True, exist_ok=True)
    image_dir = out_dir / "images"
    categories: set[str] = set()
    written = 0
    with gzip.open(out_dir / "catalog.jsonl.gz", "wt", encoding="utf-8") as catalog, \
            gzip.open(out_dir / "ground_truth.jsonl.gz", "wt", encoding="utf-8") as truth:
        for row, review in enumerate(table.itertuples(index=False)):
            clothing_id = int(review[0])
            department = review[8] if isinstance(review[8], str) else ""
            klass = review[9] if isinstance(review[9], str) else ""
            affiliate = AFFILIATES[stable_int("affiliate", row) % len(AFFILIATES)]
            description = review[3] if isinstance(review[3], str) else ""
            if row % GLITCH_EVERY == GLITCH_EVERY - 1:
                description = (description + " ") * (200_000 // (len(description) + 1) + 1)
            product = {
                "id": f"{affiliate}-{row:05d}",
                "group_id": group_id(clothing_id),
                "title": review[2] if isinstance(review[2], str) else "",
                "description": description,
                "brand": BRANDS[stable_int("brand", clothing_id) % len(BRANDS)],
                "raw_category": raw_category(affiliate, department, klass, row),
                "gender": "women",
                "size": size_from_text(review[3] if isinstance(review[3], str) else ""),
                "price": price(department, clothing_id, affiliate),
                "image": _image(clothing_id, klass, images, by_type, image_dir),
                "exclusive_label": "",
                "label_source": "",
            }
            product["rule_labels"] = labeller.labels(product)
            category = f"{department} > {klass}" if department and klass else ""
            categories.update(ancestors_and_self(category) if category else [])
            catalog.write(json.dumps(product) + "\n")
            truth.write(json.dumps({"id": product["id"], "category": category,
                                    "clothing_id": clothing_id,
                                    "group_id": product["group_id"]}) + "\n")
            written += 1
    leaves = sorted(c for c in categories if " > " in c)
    meta = {"categories": sorted(categories), "exclusive": leaves,
            "source": sources.SOURCES["reviews"].what, "format": FORMAT}
    (out_dir / "categories.json").write_text(json.dumps(meta, indent=2))
    log.info("built %d products (%d categories, %d exclusive) in %s", written, len(categories),
             len(leaves), out_dir)
    return {"products": written, "categories": len(categories), "exclusive": len(leaves),
            "images": len(list(image_dir.glob("*.png"))), "dir": str(out_dir)}


def _image(clothing_id: int, klass: str, images, by_type: dict, image_dir: Path) -> str:
    garment = FASHION_MNIST_TYPE.get(klass)
    if not garment:
        return ""
    if stable_int("dead-link", clothing_id) % DEAD_LINK_EVERY == 0:
        return (image_dir / f"removed-{clothing_id}.png").resolve().as_uri()
    candidates = by_type[garment]
    index = candidates[stable_int("image", clothing_id) % len(candidates)]
    path = image_dir / f"fashion-mnist-train-{index:05d}.png"
    if not path.exists():
        fashion_mnist.save_png(images[index], path)
    return path.resolve().as_uri()


def is_current(directory: Path) -> bool:
    """Whether ``directory`` holds a catalogue built by this version of ``build``."""
    try:
        meta = json.loads((directory / "categories.json").read_text())
    except (OSError, ValueError):
        return False
    return (directory / "catalog.jsonl.gz").exists() and meta.get("format") == FORMAT


def default_dir() -> Path:
    return sources.data_dir() / "demo_catalog"


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m catalog_data.reviews_catalog",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: $PRODCAT_DATA_DIR/demo_catalog")
    args = parser.parse_args(argv)
    emit_result(build(args.out or default_dir()))


if __name__ == "__main__":
    main()
