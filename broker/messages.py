"""The predictions message: a batch of predictions, one JSON object per line.

The publisher sends the prediction files' lines as they are (no parsing on the
hot path); the updater turns each line into an ``Update``. A line that is not a
prediction is dead-lettered on its own, with its reason: the rest of the message
still applies.

Two kinds of line travel the same queue, each versioned on its own field of the
product (``VERSION_FIELDS``), so a new neighbour set never hides a prediction or
the other way round: a category prediction (``trainer/task.py``), and a product's
visual neighbours (``similarity/neighbours.py``), recognised by its
``similar_products`` list.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

CONTENT_TYPE = "application/x-ndjson"


class BadMessage(ValueError):
    """A message line that is not a prediction."""


PREDICTION, SIMILAR = "prediction", "similar"
VERSION_FIELDS = {PREDICTION: "prediction_version", SIMILAR: "similar_version"}


@dataclass(frozen=True)
class Update:
    product_id: str
    version: int
    fields: dict  # what the update sets on the product document
    line: bytes  # as received, for the dead-letter queue
    kind: str = PREDICTION  # which versioned part of the product it replaces

    @property
    def version_field(self) -> str:
        return VERSION_FIELDS[self.kind]


MAX_VERSION = 2**63 - 1  # the store's long
MAX_NEIGHBOURS, MAX_VECTOR = 1000, 4096


def to_update(line: bytes) -> Update:
    try:
        prediction = json.loads(line)
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8, huge numbers, deep nesting
        raise BadMessage(f"not JSON: {type(err).__name__}: {err}") from None
    if not isinstance(prediction, dict):
        raise BadMessage("not a JSON object")
    product_id, run_id, version = (prediction.get(k) for k in ("id", "run_id", "version"))
    if not isinstance(product_id, str) or not product_id or not isinstance(run_id, str):
        raise BadMessage("a prediction needs string 'id' and 'run_id'")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
        raise BadMessage("a prediction needs a non-negative 64-bit integer 'version'")
    if "similar_products" in prediction:
        return _similar(product_id, run_id, version, prediction, line)
    exclusive = prediction.get("exclusive", {})
    path = exclusive.get("path", []) if isinstance(exclusive, dict) else None
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise BadMessage("'exclusive.path' must be a list of category names")
    fields = {k: v for k, v in prediction.items() if k != "id"}
    try:  # what the store cannot take (an overflowing float is Infinity) is refused here
        json.dumps(fields, allow_nan=False)
    except (ValueError, RecursionError) as err:
        raise BadMessage(f"not storable: {err}") from None
    return Update(product_id, version, {"prediction": fields, "prediction_run_id": run_id,
                                        "prediction_version": version, "prediction_path": path},
                  line)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def _similar(product_id: str, run_id: str, version: int, line_fields: dict,
             line: bytes) -> Update:
    """A neighbours line: ``similar_products`` [{id, score}], its group, tokens, vector."""
    found = line_fields["similar_products"]
    if not isinstance(found, list) or len(found) > MAX_NEIGHBOURS or not all(
            isinstance(n, dict) and set(n) == {"id", "score"} and isinstance(n["id"], str)
            and n["id"] and n["id"] != product_id and _number(n["score"]) for n in found):
        raise BadMessage(f"'similar_products' must be a list of at most {MAX_NEIGHBOURS} "
                         "{id, score} other products with finite scores")
    fields = {"similar_products": found, "similar_run_id": run_id, "similar_version": version}
    for name, kind in (("similar_group", str), ("similar_level", int), ("image_tokens", str)):
        if name in line_fields:
            if not isinstance(line_fields[name], kind) or isinstance(line_fields[name], bool):
                raise BadMessage(f"'{name}' must be a {kind.__name__}")
            fields[name] = line_fields[name]
    if "image_embedding" in line_fields:
        vector = line_fields["image_embedding"]
        if not isinstance(vector, list) or not 0 < len(vector) <= MAX_VECTOR or \
                not all(_number(x) for x in vector):
            raise BadMessage(f"'image_embedding' must be 1..{MAX_VECTOR} finite numbers")
        fields["image_embedding"] = vector
    return Update(product_id, version, fields, line, SIMILAR)


def parse(body: bytes) -> tuple[list[Update], list[tuple[bytes, str]]]:
    """``(updates, [(bad line, reason)])`` of one message; an empty body is one bad line."""
    updates, bad = [], []
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return [], [(body, "empty message")]
    for line in lines:
        try:
            updates.append(to_update(line))
        except BadMessage as err:
            bad.append((line, str(err)))
        except Exception as err:  # noqa: BLE001 (any line that cannot be read is dead-lettered)
            bad.append((line, f"cannot be read: {type(err).__name__}: {err}"))
    return updates, bad
