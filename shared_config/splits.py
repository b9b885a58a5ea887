"""A stable train/valid/test split by hashing a product's *group* key.

A feed often lists one real product several times (other affiliates, relistings,
variants). Such listings share a group key, so they always share a split: the
test products never have a sibling in training. The key is the feed's own
product/group id (the feature config's ``group_field``) where a product has one,
else its listing id. The same product lands in the same split in every run and
stage: the dump, the preprocessing job, the labelling oracle and the benchmarks
all call ``split_of``.
"""
from __future__ import annotations

import hashlib

SPLIT_PERCENT = (("train", 80), ("valid", 10), ("test", 10))


def split_for(key: str | bytes) -> str:
    """The split of a group key (or of a listing id, for a product without a group)."""
    # surrogatepass: a lone surrogate (valid JSON, not UTF-8) still hashes, and stably
    raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    bucket = int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % 100
    for split, percent in SPLIT_PERCENT:
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("split percentages must add up to 100")


def group_key(product: dict, group_field: str, id_field: str = "id") -> str:
    """The product's group id when it has a non-empty one, else its listing id."""
    group = product.get(group_field) if group_field else None
    if isinstance(group, (int, float)) and not isinstance(group, bool):
        group = str(group)
    if isinstance(group, str) and group.strip():
        return "group:" + group.strip()
    return str(product.get(id_field, ""))


def split_of(product: dict, group_field: str, id_field: str = "id") -> str:
    """The split of one product (a dict of its fields)."""
    return split_for(group_key(product, group_field, id_field))
