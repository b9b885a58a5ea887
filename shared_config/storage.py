"""Read and write run files the same way under a local or a ``gs://`` prefix.

Thin helpers over fsspec (``gcsfs`` serves ``gs://``; ``STORAGE_EMULATOR_HOST``
points it at an emulator), so a stage never branches on where the prefix is.
"""
from __future__ import annotations

import json

import fsspec


def filesystem(path: str):
    fs, _ = fsspec.core.url_to_fs(path)
    return fs


def open_file(path: str, mode: str = "rb", compression: str | None = None):
    """Open one file; parents of a local file are created when writing."""
    if "w" in mode or "a" in mode:
        makedirs(path.rsplit("/", 1)[0])
    return fsspec.open(path, mode, compression=compression).open()


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


def write_json(path: str, payload) -> None:
    with open_file(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)


def read_json(path: str):
    with open_file(path, "r") as handle:
        return json.load(handle)
