"""The predictions message: a batch of predictions, one JSON object per line.

The publisher sends the prediction files' lines as they are (no parsing on the
hot path); the updater turns each line into an ``Update``. A line that is not a
prediction is dead-lettered on its own, with its reason: the rest of the message
still applies.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

CONTENT_TYPE = "application/x-ndjson"


class BadMessage(ValueError):
    """A message line that is not a prediction."""


@dataclass(frozen=True)
class Update:
    product_id: str
    version: int
    fields: dict  # what the update sets on the product document
    line: bytes  # as received, for the dead-letter queue


MAX_VERSION = 2**63 - 1  # the store's long


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
