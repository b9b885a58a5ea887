"""The embeddings' files under a run's ``embeddings/``: written by the trainer's ``embed``,
read by ``similarity/neighbours.py``.

``part-NNNNN.npz`` shards hold ``ids`` (strings), ``vectors`` (float32 ``[n, dim]``, unit
length), ``paths`` (each product's predicted category path, as JSON) and ``groups`` (the
real product each listing belongs to: its group key, else its own id); beside them the
tokeniser (``tokeniser.json``), the tower (``tower.keras``) and a summary (``embed.json``).
"""
from __future__ import annotations

import io
import json

import numpy as np

from shared_config import storage

SHARD_NAME, SHARD_GLOB = "part-{:05d}.npz", "part-*.npz"
TOKENISER_FILE, TOWER_FILE, SUMMARY_FILE = "tokeniser.json", "tower.keras", "embed.json"


def write_shard(directory: str, number: int, ids: list[str], vectors,
                categories: list[list[str]], groups: list[str] | None = None) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), vectors=np.stack(vectors).astype(np.float32),
             paths=np.array([json.dumps(c) for c in categories], dtype=str),
             groups=np.array(groups if groups is not None else ids, dtype=str))
    with storage.open_file(directory + SHARD_NAME.format(number), "wb") as out:
        out.write(buffer.getvalue())


def read_shard(path: str) -> tuple[np.ndarray, np.ndarray, list[list[str]], np.ndarray]:
    """``(ids, float32 vectors, predicted paths, product groups)`` of one shard."""
    with storage.open_file(path, "rb") as raw:
        stored = np.load(io.BytesIO(raw.read()), allow_pickle=False)
        return (stored["ids"], stored["vectors"], [json.loads(p) for p in stored["paths"]],
                stored["groups"])


def shards(directory: str) -> list[str]:
    return storage.glob(directory + SHARD_GLOB)
