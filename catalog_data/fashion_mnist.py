"""Fashion-MNIST from Debian's ``dataset-fashion-mnist``: images, labels, PNG files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from catalog_data import sources

LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
          "Bag", "Ankle boot")
_DIR = "usr/share/datasets/fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[:4], "big")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    offset = 4 + 4 * len(dims)
    if len(raw) - offset != int(np.prod(dims)):
        raise ValueError(f"{path}: IDX size does not match its header {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load(split: str = "train", cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images [n, 28, 28] uint8, labels [n] uint8)`` for ``train`` or ``t10k``."""
    files = sources.fetch("fashion_mnist", cache)
    images = _read_idx(files[f"{_DIR}/{split}-images-idx3-ubyte.gz"])
    labels = _read_idx(files[f"{_DIR}/{split}-labels-idx1-ubyte.gz"])
    if len(images) != len(labels):
        raise ValueError("Fashion-MNIST images and labels differ in length")
    return images, labels


def save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(path, format="PNG")
    return path
