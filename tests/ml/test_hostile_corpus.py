"""A hostile affiliate feed through the real catalog_train DAG on the local stack.

A catalogue of good products with a few odd ones among them — every field null,
a list, an object, huge, a lone surrogate, a bad number; image references of every
kind a feed can hold — is put straight into the store, and the weekly run must
finish: dumped = examples + quarantined, with a reason for each quarantined
product; no file outside the allowed image directories is opened (an audit hook in
every stage process says so), no host name but this machine's is looked up (the same
hook) and no request reaches an address the policy does not allow (a canary server counts
them).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from beam_pipelines.raw_schema import valid_unicode
from local_stack.demo import airflow_bin, wait_for_updates
from local_stack.stack import REPO_ROOT, start_updater, stop_process
from shared_config import storage
from shared_config.paths import SPLITS, RunPaths
from store import demo_catalog
from store.client import ProductStore
from store.load import Rejects, load_products
from tests.ml.test_images import Canary, _corrupt_idat, _encoded, _png_claiming, png

GOOD_PRODUCTS = 2000
IMAGE_HOST, CANARY_HOST = "127.0.0.3", "127.0.0.2"  # the image server is allowed, the canary not

# Installed in every Python process of the run (a sitecustomize on PYTHONPATH): logs any
# open() of a watched path, any connect() to a watched host and any name looked up that is
# not this machine's.
AUDIT_HOOK = '''
import ipaddress, os, socket as _socket, sys
_watched = [p for p in os.environ.get("PRODCAT_TEST_AUDIT_WATCH", "").split(os.pathsep) if p]
_hosts = [h for h in os.environ.get("PRODCAT_TEST_AUDIT_HOSTS", "").split(",") if h]
_log = os.environ.get("PRODCAT_TEST_AUDIT_LOG")
# the names a run may look up: this machine's (any other, a download say, is logged)
_local_names = {"localhost", "None", "", _socket.gethostname()}

def _is_address(host):  # an address is not looked up (the fetch policy checks it as given)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

def _hook(event, args):
    if not _log:
        return
    if event == "open" and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if any(path == w or path.startswith(w.rstrip("/") + "/") for w in _watched):
            with open(_log, "a") as out:
                out.write(f"open {path} by {sys.argv[:3]}\\n")
    elif event == "socket.connect" and isinstance(args[1], tuple):
        if str(args[1][0]) in _hosts:
            with open(_log, "a") as out:
                out.write(f"connect {args[1]} by {sys.argv[:3]}\\n")
    elif event == "socket.getaddrinfo":
        host = os.fsdecode(args[0]) if isinstance(args[0], bytes) else str(args[0])
        if not (host in _local_names or _is_address(host)):
            with open(_log, "a") as out:
                out.write(f"getaddrinfo {host} by {sys.argv[:3]}\\n")

sys.addaudithook(_hook)
'''


class ImageServer(BaseHTTPRequestHandler):
    """Good images, broken ones, and redirects to where a run must not go."""

    redirects: dict = {}  # noqa: RUF012

    def do_GET(self):
        if self.path in ImageServer.redirects:
            self.send_response(302)
            self.send_header("Location", ImageServer.redirects[self.path])
            self.end_headers()
            return
        body = {"/good.png": png(), "/good.tiff": _encoded("TIFF"),
                "/bomb.png": _png_claiming(20000, 20000), "/html": b"<html>x</html>"}.get(
            self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_):
        pass


def _serve(handler, host: str) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


def image_references(root: Path, outside: Path, images: str, canary: str, store_url: str):
    """``(reference, usable)``: every kind of image reference a feed can hold."""
    (root / "good.png").write_bytes(png())
    for fmt in ("TIFF", "PPM", "ICO"):
        (root / f"good.{fmt.lower()}").write_bytes(_encoded(fmt))
    (root / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    (root / "corrupt.png").write_bytes(_corrupt_idat())
    (root / "to-secret.png").symlink_to(outside)
    (root / "to-passwd.png").symlink_to("/etc/passwd")
    os.mkfifo(root / "fifo.png")
    ImageServer.redirects = {"/to-canary": canary + "/redirected",
                             "/to-store": store_url + "/_cat/indices",
                             "/to-metadata": "http://169.254.169.254/latest/meta-data/",
                             "/to-file": "file:///etc/passwd"}
    usable = [str(root / "good.png"), (root / "good.tiff").as_uri(), str(root / "good.ppm"),
              str(root / "good.ico"), images + "/good.png", images + "/good.tiff"]
    unusable = [
        str(root / "bomb.png"), str(root / "corrupt.png"), str(root / "fifo.png"),
        str(root / "to-secret.png"), str(root / "to-passwd.png"), str(root / "missing.png"),
        str(outside), outside.as_uri(), "/etc/passwd", "file:///etc/passwd", "/dev/zero",
        "file://otherhost/etc/passwd", "good.png", "../../../etc/passwd",
        images + "/bomb.png", images + "/html", images + "/missing.png",
        images + "/to-canary", images + "/to-store", images + "/to-metadata",
        images + "/to-file", canary + "/direct.png", store_url + "/_cat/indices",
        store_url.replace("127.0.0.1", "localhost") + "/", "http://169.254.169.254/latest/",
        "http://[::1]:9200/", "http://[::1", "http://host:port/x.png", "http://",
        "javascript:alert(1)", "data:image/png;base64,iVBORw0KGgo=", "ftp://example.com/x.png",
        "http://exa mple.com/\x00.png", "http://\udcff.example/x.png", images + "/" + "a" * 10_000,
    ]
    return [(ref, True) for ref in usable] + [(ref, False) for ref in unusable]


def hostile_products() -> list[dict]:
    """Products that must each go to the quarantine or through, never stop the run."""
    odd_values = [None, [], ["a", 1], {"nested": {"deeper": [1, 2]}}, "x" * 150_000,
                  "\udcff lone surrogate", "\ud800", True, 1e308, -0.0, "NaN", "Infinity",
                  "1e999", "𝕱𝖆𝖓𝖈𝖞 \u202e txt \u200b", "<script>alert(1)</script>", "\x00\x01\x1f"]
    products = []
    for field in ("title", "description", "brand", "raw_category", "gender", "size", "price",
                  "group_id", "rule_labels", "exclusive_label"):
        for n, value in enumerate(odd_values):
            products.append({"id": f"odd-{field}-{n}", "title": "plain shirt", field: value})
    for n, value in enumerate([None, "", 7, ["a"], {"a": 1}, "\udcff", " "]):
        products.append({"id": value, "title": "odd id", "_doc_id": f"odd-id-{n}"})
    products.append({"title": "no id at all", "_doc_id": "no-id"})
    return products


def put_straight_into_the_store(store: ProductStore, products: list[dict]) -> int:
    """Index as a feed would, bypassing the loader's checks; return how many the store took."""
    taken = 0
    for product in products:
        doc_id = product.pop("_doc_id", None) or product["id"]
        try:
            store.client.index(index=store.index, id=doc_id, body=product)
            taken += 1
        except Exception:  # noqa: BLE001, S110 (the store's mapping refused it: never dumped)
            pass
    store.refresh()
    return taken


@pytest.fixture
def hostile_env(broker_settings, tmp_path):
    if not os.path.exists(airflow_bin()):
        pytest.fail(f"the Airflow environment is missing ({airflow_bin()}): run `make install`")
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    (audit_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    root, outside = tmp_path / "images", tmp_path / "secret.png"
    root.mkdir()
    outside.write_bytes(png())
    env = {**os.environ, **broker_settings.as_env(),
           "PYTHONPATH": f"{audit_dir}{os.pathsep}{REPO_ROOT}",
           "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PRODCAT_IMAGE_ROOTS": str(root),
           "PRODCAT_IMAGE_ALLOWED_NETWORKS": f"{IMAGE_HOST}/32",
           "PRODCAT_TEST_AUDIT_LOG": str(tmp_path / "audit.log"),
           "PRODCAT_TEST_AUDIT_WATCH": os.pathsep.join([str(outside), "/etc/passwd", "/dev/zero"]),
           "PRODCAT_TEST_AUDIT_HOSTS": f"{CANARY_HOST},169.254.169.254"}
    subprocess.run([airflow_bin(), "db", "migrate"], env={**env, "PRODCAT_TEST_AUDIT_LOG": ""},
                   check=True, capture_output=True)
    return env, root, outside, tmp_path / "audit.log"


def test_a_hostile_feed_cannot_stop_the_run_nor_reach_outside(broker_settings, hostile_env,
                                                              tmp_path):
    env, root, outside, audit_log = hostile_env
    canary, canary_url = _serve(Canary, CANARY_HOST)
    images, images_url = _serve(ImageServer, IMAGE_HOST)
    Canary.hits.clear()
    store = ProductStore.from_settings(broker_settings)
    good = list(demo_catalog.generate(GOOD_PRODUCTS, seed=3, exclusive_fraction=0.3))
    references = image_references(root, outside, images_url, canary_url, broker_settings.store_url)
    for product, (ref, _) in zip(good[::7], references):
        product["image"] = ref
    rejects = Rejects()
    load_products(store, good, recreate=True, rejects=rejects)
    assert rejects.count == 0
    in_store = GOOD_PRODUCTS + put_straight_into_the_store(store, hostile_products())
    assert store.count() == in_store

    # the audit hook is in every process started with this environment: it sees a probe
    probe = (f"open({str(outside)!r}).close()\nimport socket\n"
             "try:\n    socket.getaddrinfo('example.invalid', 80)\nexcept OSError:\n    pass")
    subprocess.run([sys.executable, "-c", probe], env=env, check=True)
    assert f"open {outside}" in audit_log.read_text()
    assert "getaddrinfo example.invalid" in audit_log.read_text()
    audit_log.unlink()

    run_id = f"hostile-{uuid.uuid4().hex[:6]}"
    updater = start_updater(env, tmp_path / "updater.log")
    try:
        completed = subprocess.run(
            [airflow_bin(), "dags", "test", "catalog_train", "--conf",
             json.dumps({"run_id": run_id, "epochs": 1})],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-5000:]
        stats = storage.read_json(RunPaths.for_run(run_id, broker_settings.prefix)
                                  .stats_file("run"))["stages"]
        examples = sum(stats["preprocess"]["examples"][f"catalog_{s}"] for s in SPLITS)
        updated = wait_for_updates(store, run_id, examples, timeout=180)
    finally:
        stop_process(updater)
        canary.shutdown()
        images.shutdown()

    # every product is accounted for: an example, or quarantined with its reason
    paths = RunPaths.for_run(run_id, broker_settings.prefix)
    assert stats["dump"]["products"] == in_store == stats["preprocess"]["products_read"]
    assert examples + stats["preprocess"]["quarantined"] == in_store
    assert stats["preprocess"]["quarantined"] > 0
    quarantined = [json.loads(line) for path in storage.glob(paths.quarantine_dir + "*")
                   for line in Path(path).read_text(encoding="utf-8").splitlines()]
    products = [q for q in quarantined if q["kind"] != "image"]
    assert len(products) == stats["preprocess"]["quarantined"]
    assert all(q["reason"] and q["record"] for q in quarantined)
    # every unusable image reference has its reason; the usable ones came through
    problems = {q["record"]: q["reason"] for q in quarantined if q["kind"] == "image"}
    for ref, usable in references:
        ref = valid_unicode(ref).strip()  # as the job reads it (a lone surrogate is U+FFFD)
        if usable:
            assert ref not in problems, (ref, problems.get(ref))
        else:
            assert ref[:2000] in problems, ref
    assert stats["preprocess"]["images_fetched"] == sum(usable for _, usable in references)
    # nothing reached outside what the policy allows
    assert Canary.hits == []
    assert not audit_log.exists(), audit_log.read_text()
    assert "refused by the fetch policy" in problems[str(outside)]
    assert "refused by the fetch policy" in problems[images_url + "/to-store"]
    # and the predictions of every example reached the store
    assert updated == examples == stats["publish"]["published"]
