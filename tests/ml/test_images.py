"""Image fetching against a local HTTP server: good, missing, slow, oversized, broken, flaky."""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from beam_pipelines import images
from beam_pipelines.preprocess import attach_images, local_runner_options

# The test server listens on loopback: the policy allows 127.0.0.1 (and nothing else private).
POLICY = images.FetchPolicy(timeout=1.0, deadline=5.0, max_bytes=20_000, retries=2, backoff=0.01,
                            concurrency=4, allowed_networks=("127.0.0.1/32",))


def png(size: int = 8) -> bytes:
    """Noise, so the PNG cannot compress below its pixel count."""
    pixels = np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    hits: ClassVar[collections.Counter] = collections.Counter()
    flaky_left: ClassVar[dict] = {"n": 0}

    def do_GET(self):
        Handler.hits[self.path] += 1
        if self.path.startswith("/good"):
            return self._send(200, png())
        if self.path == "/slow.png":
            time.sleep(3)
            return self._send(200, png())
        if self.path == "/huge.png":
            return self._send(200, png(400))  # ~160 kB, over the limit
        if self.path == "/broken.png":
            return self._send(200, b"<html>not an image</html>")
        if self.path == "/flaky.png":
            if Handler.flaky_left["n"] > 0:
                Handler.flaky_left["n"] -= 1
                return self._send(503, b"busy")
            return self._send(200, png())
        return self._send(404, b"not found")

    def _send(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_good_image_comes_back_as_its_bytes(server):
    assert images.fetch(f"{server}/good.png", POLICY) == png()


@pytest.mark.parametrize("path, reason", [
    ("/missing.png", "HTTP 404"),
    ("/slow.png", "unreachable"),
    ("/huge.png", "limit"),
    ("/broken.png", "does not decode"),
])
def test_unusable_images_say_why(server, path, reason):
    with pytest.raises(images.ImageError, match=reason):
        images.fetch(server + path, POLICY)


def test_a_404_is_not_retried_but_a_503_is(server):
    Handler.hits.clear()
    with pytest.raises(images.ImageError):
        images.fetch(f"{server}/missing.png", POLICY)
    assert Handler.hits["/missing.png"] == 1
    Handler.flaky_left["n"] = 2
    assert images.fetch(f"{server}/flaky.png", POLICY) == png()
    assert Handler.hits["/flaky.png"] == 3


def test_local_files_and_file_uris(tmp_path):
    path = tmp_path / "a b.png"
    path.write_bytes(png())
    policy = dataclasses.replace(POLICY, local_roots=(str(tmp_path),))
    assert images.fetch(str(path), policy) == png()
    assert images.fetch(path.as_uri(), policy) == png()
    with pytest.raises(images.ImageError, match="cannot read file"):
        images.fetch(str(tmp_path / "none.png"), policy)
    with pytest.raises(images.ImageError, match="unsupported scheme"):
        images.fetch("ftp://example.invalid/x.png", policy)


def test_each_distinct_url_is_fetched_once_per_run(server):
    Handler.hits.clear()
    good, missing = f"{server}/good-shared.png", f"{server}/missing-shared.png"
    products = [{"id": f"p{i}", "image": ref} for i, ref in
                enumerate([good] * 5 + [missing] * 3 + [""] * 2)]
    normalised = images.normalise(png(), 8, POLICY)
    with beam.Pipeline(options=local_runner_options([])) as pipeline:  # the job's runner
        attached, problems = attach_images(pipeline | beam.Create(products), {"image": 8}, POLICY)
        assert_that(attached | "Sizes" >> beam.Map(lambda p: (p["id"], len(p["image"]))),
                    equal_to([(f"p{i}", len(normalised)) for i in range(5)]
                             + [(f"p{i}", 0) for i in range(5, 10)]), label="products")
        assert_that(problems[0] | beam.Map(lambda q: (q["kind"], q["record"])),
                    equal_to([("image", missing)]), label="quarantine")
    assert Handler.hits["/good-shared.png"] == 1 and Handler.hits["/missing-shared.png"] == 1


# --- Hostile references and images -------------------------------------------------------


class Canary(BaseHTTPRequestHandler):
    """A server the policy does not allow (127.0.0.2): it counts every request that reaches it."""

    hits: ClassVar[list] = []

    def do_GET(self):
        Canary.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(png())

    def log_message(self, *_):
        pass


class Tricks(BaseHTTPRequestHandler):
    """Redirects to the canary, and a response that trickles one byte at a time."""

    canary = ""

    def do_GET(self):
        if self.path == "/to-canary":
            self.send_response(302)
            self.send_header("Location", Tricks.canary + "/secret")
            self.end_headers()
            return
        if self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass

    def log_message(self, *_):
        pass


def _serve(handler, host: str):
    httpd = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://{host}:{httpd.server_address[1]}"


@pytest.fixture(scope="module")
def hostile_servers():
    canary, canary_url = _serve(Canary, "127.0.0.2")
    Tricks.canary = canary_url
    tricks, tricks_url = _serve(Tricks, "127.0.0.1")
    yield canary_url, tricks_url
    canary.shutdown()
    tricks.shutdown()


def test_requests_to_addresses_the_policy_does_not_allow_never_leave(hostile_servers):
    canary, tricks = hostile_servers
    Canary.hits.clear()
    for ref, reason in [
        (canary + "/direct.png", "refused by the fetch policy"),
        (canary.replace("127.0.0.2", "[::ffff:127.0.0.2]") + "/mapped.png", "refused"),
        ("http://169.254.169.254/latest/meta-data/", "refused by the fetch policy"),
        ("http://[::1]:9/x.png", "refused by the fetch policy"),
        ("http://10.1.2.3/x.png", "refused by the fetch policy"),
        (tricks + "/to-canary", "refused by the fetch policy"),  # checked after the redirect
        (tricks + "/to-file", "HTTP 302"),  # a redirect to file:// is not followed
    ]:
        with pytest.raises(images.ImageError, match=reason):
            images.fetch(ref, POLICY)
    assert Canary.hits == []
    # and the policy can allow it: the same canary, allowed by name
    allowed = dataclasses.replace(POLICY, allowed_networks=("127.0.0.0/8",))
    assert images.fetch(canary + "/allowed.png", allowed) == png()


def test_a_server_that_trickles_bytes_is_cut_at_the_deadline(hostile_servers):
    _, tricks = hostile_servers
    policy = dataclasses.replace(POLICY, timeout=0.5, deadline=1.0, retries=0)
    started = time.monotonic()
    with pytest.raises(images.ImageError, match="deadline"):
        images.fetch(tricks + "/trickle", policy)
    assert time.monotonic() - started < 5  # the server would go on for 20 s


@pytest.mark.parametrize("ref", ["http://[::1", "http://host:notaport/x.png", "http://",
                                 "http://exa mple.com/\x00.png", "https://\udcff.example/x.png",
                                 "gopher://example.com/x", "data:image/png;base64,AAAA"])
def test_references_that_are_not_urls_are_refused_with_a_reason(ref):
    [(_, data, reason)] = images.fetch_all([ref], POLICY)
    assert data is None and reason


def test_local_files_only_under_the_roots_and_only_regular_files(tmp_path, monkeypatch):
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(png())
    outside = tmp_path / "secret.png"
    outside.write_bytes(png())
    (root / "link.png").symlink_to(outside)
    (root / "dev.png").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.png")
    policy = dataclasses.replace(POLICY, local_roots=(str(root),))
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0]))
                     if event == "open" and isinstance(args[0], (str, bytes)) else None)
    monkeypatch.chdir(root)
    for ref, reason in [(str(outside), "outside the allowed image directories"),
                        (outside.as_uri(), "outside"),
                        ("/etc/passwd", "outside"), ("file:///etc/passwd", "outside"),
                        (str(root / ".." / "secret.png"), "outside"),
                        (str(root / "link.png"), "outside"), (str(root / "dev.png"), "outside"),
                        ("ok.png", "a relative path"),
                        ("file://elsewhere/etc/passwd", "another host"),
                        (str(root / "fifo.png"), "not a regular file")]:
        with pytest.raises(images.ImageError, match=reason):
            images.fetch(ref, policy)
    assert images.fetch(str(root / "ok.png"), policy) == png()
    assert not [path for path in opened if "secret" in path or path.startswith(("/etc", "/dev"))]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                   8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + _png_chunk(b"IEND", b""))


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
        buffer, fmt)
    return buffer.getvalue()


def _corrupt_idat() -> bytes:
    good = bytearray(png(32))
    start = good.index(b"IDAT") + 4
    good[start + 2:start + 40] = bytes(38)  # the compressed pixels broken, the CRC left as is
    return bytes(good)


@pytest.mark.parametrize("data, reason", [
    (_png_claiming(20000, 20000), "decode|pixels"),
    (_png_claiming(8000, 8000), "over the 50,000,000-pixel limit"),
    (_corrupt_idat(), "does not decode"),
    (b"GIF89a" + bytes(20), "does not decode"),
])
def test_bombs_and_broken_images_are_refused_at_preprocess(data, reason):
    assert len(data) < 5000
    with pytest.raises(images.ImageError, match=reason):
        images.normalise(data, 28, POLICY)


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "BMP", "GIF", "JPEG", "WEBP", "PNG"])
def test_every_accepted_image_is_one_the_trainer_decodes(fmt):
    import tensorflow as tf

    from trainer.data import decode_images

    normalised = images.normalise(_encoded(fmt), 28, POLICY)
    assert normalised.startswith(b"\x89PNG")
    pixels = decode_images(tf.constant([normalised]), 28).numpy()
    assert pixels.shape == (1, 28, 28, 1) and pixels.max() > 0


def test_images_decode_alike_eagerly_and_in_a_pipeline_in_one_graph():
    """The stages that read parsed batches one by one (active learning, the peer, the image
    embedding) decode eagerly; the trainer decodes inside a ``tf.data`` map. Both get the same
    pixels (to float32's last bit), and the eager calls reuse one traced graph whatever the batch's length (not
    Python per image)."""
    import tensorflow as tf

    from trainer import data

    png = images.normalise(_encoded("PNG"), 28, POLICY)
    batch = tf.constant([png, b"", png])
    eager = data.decode_images(batch, 28).numpy()
    in_pipeline = next(iter(tf.data.Dataset.from_tensors(batch).map(
        lambda encoded: data.decode_images(encoded, 28)))).numpy()
    assert eager.shape == (3, 28, 28, 1) and eager[0].max() > 0
    assert not eager[1].any()  # no image: zeros
    # the same graph; TensorFlow's optimiser may turn the division into a product: 1 ulp
    np.testing.assert_allclose(eager, in_pipeline, rtol=0, atol=1e-7)
    traced = data._image_decoder(28).experimental_get_tracing_count()
    data.decode_images(tf.constant([png] * 5), 28)
    assert data._image_decoder(28).experimental_get_tracing_count() == traced == 1
