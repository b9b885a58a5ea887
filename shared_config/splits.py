"""A stable train/valid/test split by hashing product ids.

The same product lands in the same split in every run and every stage, so the
test products never leak into training.
"""
from __future__ import annotations

import hashlib

SPLIT_PERCENT = (("train", 80), ("valid", 10), ("test", 10))


def split_for(product_id: str | bytes) -> str:
    raw = product_id if isinstance(product_id, bytes) else product_id.encode("utf-8")
    bucket = int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % 100
    for split, percent in SPLIT_PERCENT:
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("split percentages must add up to 100")
