"""A real osmem store with a small labelled catalogue, users, and the UI's settings."""
from __future__ import annotations

import struct
import uuid
import zlib

import pytest

from local_stack.services import free_port, start_store
from store.client import ProductStore
from store.run_stats import run_document, runs_store
from webui import users
from webui.settings import UiSettings

CATEGORIES = ["Tops > Knits", "Tops > Blouses", "Dresses", "Bottoms > Jeans", "Bottoms > Pants",
              "Jackets"]
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "root": "root-password"}


def png(width: int = 8, height: int = 8, grey: int = 128) -> bytes:
    """A valid greyscale PNG, written by hand (no imaging library here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes([grey]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                              0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def product(i: int, image_dir, queued: bool) -> dict:
    ranked = CATEGORIES[i % len(CATEGORIES):] + CATEGORIES[:i % len(CATEGORIES)]
    scores = [0.5, 0.2, 0.1, 0.08, 0.07]
    image = image_dir / f"p{i:03d}.png"
    image.write_bytes(png(grey=20 * (i % 10)))
    doc = {"id": f"p{i:03d}", "group_id": f"g{i // 2}", "title": f"Product {i} soft cotton",
           "description": "<script>alert(1)</script> a hostile description",
           "brand": "Acme", "raw_category": "women > tops", "price": 10.0 + i,
           "image": str(image), "rule_labels": [ranked[0]], "exclusive_label": "",  # as feeds have it
           "prediction": {"run_id": "r1", "version": 1001, "exclusive": {
               "category": ranked[0], "score": scores[0], "path": ranked[0].split(" > "),
               "top": [{"category": c, "score": s} for c, s in zip(ranked, scores, strict=False)]}},
           "prediction_run_id": "r1", "prediction_version": 1001,
           "prediction_path": [" > ".join(ranked[0].split(" > ")[:k + 1])
                               for k in range(len(ranked[0].split(" > ")))]}
    doc.update({"similar_run_id": "r1", "similar_version": 1001, "similar_group": "Tops",
                "similar_level": 1, "similar_products": [
                    {"id": f"p{(i + k) % 40:03d}", "score": round(0.9 - k / 10, 2)}
                    for k in (1, 2, 3)]})
    if queued:
        doc["label_request"] = {"run_id": "r1", "strategy": "margin+diverse", "score": 0.9 - i / 100,
                                "rank": i, "split": "train",
                                "requested_at": "2026-11-21T10:00:00+00:00"}
    return doc


def run_summary() -> tuple[dict, dict]:
    per_class = {c: {"precision": 0.5 + k / 20, "recall": 0.6, "f1": 0.55, "support": 3 + k}
                 for k, c in enumerate(CATEGORIES)}
    matrix = [[3 if i == j else (1 if j == (i + 1) % 6 else 0) for j in range(6)]
              for i in range(6)]
    stages = {
        "dump": {"products": 40}, "predict": {"predictions": 40}, "publish": {"published": 40},
        "preprocess": {"quarantined": 2, "quarantined_by_reason": {"bad_json": 1, "bad_id": 1},
                       "images_unusable": 3, "examples": {"catalog_train": 30}},
        "train": {"hparams_id": "h1", "model_type": "ssl_gan"},
        "evaluate_valid": {"objectives": {"exclusive": {
            "accuracy": 0.61, "macro_f1": 0.52, "per_class": per_class,
            "confusion": {"classes": CATEGORIES, "matrix": matrix}}}},
        "baseline_evaluate_valid": {"objectives": {"exclusive": {"accuracy": 0.6,
                                                                 "macro_f1": 0.5}}},
        "peer_evaluate_valid": {"objectives": {"exclusive": {"accuracy": 0.58, "macro_f1": 0.47}}},
    }
    return ({"run_id": "r1", "recorded_at": "2026-11-21T09:00:00+00:00", "stages": stages},
            {"created_at": "2026-11-21T08:00:00+00:00", "airflow_run_id": "manual__2026-11-21"})


@pytest.fixture(scope="session")
def store_server():
    server = start_store(free_port())
    yield server
    server.close()


@pytest.fixture
def ui_settings(store_server, tmp_path, monkeypatch) -> UiSettings:
    """A catalogue of 40 products (the first 12 queued), a recorded run, three users."""
    suffix = uuid.uuid4().hex[:8]
    images = tmp_path / "images"
    images.mkdir()
    env = {"PRODCAT_PREFIX": str(tmp_path / "prefix"), "PRODCAT_STORE_URL": store_server.url,
           "PRODCAT_STORE_INDEX": f"products-{suffix}", "PRODCAT_RUNS_INDEX": f"runs-{suffix}",
           "PRODCAT_IMAGE_ROOTS": str(images), "PRODCAT_UI_DIR": str(tmp_path / "ui"),
           "PRODCAT_UI_AUTH": "local", "PRODCAT_UI_FIGURES": str(tmp_path / "figures")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = UiSettings.from_env()
    store = ProductStore.from_settings(settings.store)
    store.create_index()
    store.index_products([product(i, images, queued=i < 12) for i in range(40)])
    store.refresh()
    runs = runs_store(settings.store)
    runs.create_index()
    runs.index_products([run_document(*run_summary())])
    runs.refresh()
    for name, role in (("alice", "labeller"), ("bob", "labeller"), ("root", "admin")):
        users.add(settings.users_file, name, role, PASSWORDS[name])
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "label_efficiency_reviews.png").write_bytes(png(16, 16))
    return settings


@pytest.fixture
def products(ui_settings) -> ProductStore:
    return ProductStore.from_settings(ui_settings.store)
