"""Read and write run files the same way under a local or a ``gs://`` prefix.

Thin helpers over fsspec (``gcsfs`` serves ``gs://``; ``STORAGE_EMULATOR_HOST``
points it at an emulator), so a stage never branches on where the prefix is.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Self

import fsspec

SHARD_NAME = "part-{:05d}.jsonl.gz"


def filesystem(path: str):
    fs, _ = fsspec.core.url_to_fs(path)
    return fs


def open_file(path: str, mode: str = "rb", compression: str | None = None):
    """One file, to use in a ``with`` block (closing it uploads a remote file).

    Parents of a local file are created when writing.
    """
    if "w" in mode or "a" in mode:
        makedirs(path.rsplit("/", 1)[0])
    return fsspec.open(path, mode, compression=compression)


def makedirs(path: str) -> None:
    filesystem(path).makedirs(path, exist_ok=True)


def glob(pattern: str) -> list[str]:
    """Sorted matches, with the scheme kept for remote paths."""
    fs = filesystem(pattern)
    matches = sorted(fs.glob(pattern))
    if pattern.startswith("gs://"):
        return ["gs://" + m.removeprefix("gs://") for m in matches]
    return matches


def exists(path: str) -> bool:
    return filesystem(path).exists(path)


def remove(path: str) -> None:
    """Delete a file, or a directory with everything in it."""
    filesystem(path).rm(path, recursive=True)


def upload(local: str, target: str) -> None:
    """Copy a local file, or a directory tree, to ``target`` (local or remote)."""
    if os.path.isdir(local):
        for root, _, names in os.walk(local):
            for name in names:
                path = os.path.join(root, name)
                upload(path, f"{target}/{os.path.relpath(path, local)}")
        return
    with open(local, "rb") as src, open_file(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def download(source: str, local: str) -> None:
    """Copy one file from ``source`` (local or remote) to a local path."""
    with open_file(source, "rb") as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)


def to_line(record) -> str:
    """One record as one line of JSON, whatever its strings hold.

    ASCII with escapes: a lone surrogate (valid JSON, and kept by the store) or any
    other code point is written as ``\\uXXXX`` and read back the same, so a product
    is never lost for its text; the preprocessing job decides what to do with it.
    """
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def write_json(path: str, payload) -> None:
    """Write JSON; a local file is replaced whole (written aside, then renamed), so a
    reader never sees half of it, even after a crash mid-write. Remote objects are
    replaced whole by the object store itself."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    if "://" in path:
        with open_file(path, "w") as handle:
            handle.write(text)
        return
    makedirs(os.path.dirname(path))
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def read_json(path: str):
    with open_file(path, "r") as handle:
        return json.load(handle)


class ShardedJsonlWriter:
    """Write records as gzipped JSON lines, ``per_shard`` records per file, streaming.

    Files are ``{directory}part-00000.jsonl.gz``, ``part-00001...``; only the current
    shard is open, so memory stays flat however many records are written.
    """

    def __init__(self, directory: str, per_shard: int):
        if per_shard < 1:
            raise ValueError("records per shard must be positive")
        self.directory, self.per_shard = directory, per_shard
        self.records = self.shards = 0
        self._current = self._handle = None

    def write(self, record: dict) -> None:
        if self.records % self.per_shard == 0:
            self._close_shard()
            self._current = open_file(self.directory + SHARD_NAME.format(self.shards), "wt",
                                      compression="gzip")
            self._handle = self._current.__enter__()
            self.shards += 1
        self._handle.write(to_line(record) + "\n")
        self.records += 1

    def _close_shard(self) -> None:
        if self._current is not None:
            self._current.__exit__(None, None, None)
            self._current = self._handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._close_shard()
