"""Image fetching against a local HTTP server: good, missing, slow, oversized, broken, flaky."""
from __future__ import annotations

import collections
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from beam_pipelines import images
from beam_pipelines.preprocess import attach_images

POLICY = images.FetchPolicy(timeout=1.0, max_bytes=20_000, retries=2, backoff=0.01, concurrency=4)


def png(size: int = 8) -> bytes:
    """Noise, so the PNG cannot compress below its pixel count."""
    pixels = np.random.default_rng(size).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    hits: collections.Counter = collections.Counter()
    flaky_left = {"n": 0}

    def do_GET(self):  # noqa: N802 (the http.server API)
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
    assert images.fetch(str(path), POLICY) == png()
    assert images.fetch(path.as_uri(), POLICY) == png()
    with pytest.raises(images.ImageError, match="cannot read file"):
        images.fetch(str(tmp_path / "none.png"), POLICY)
    with pytest.raises(images.ImageError, match="unsupported scheme"):
        images.fetch("ftp://example.invalid/x.png", POLICY)


def test_each_distinct_url_is_fetched_once_per_run(server):
    Handler.hits.clear()
    good, missing = f"{server}/good-shared.png", f"{server}/missing-shared.png"
    products = [{"id": f"p{i}", "image": ref} for i, ref in
                enumerate([good] * 5 + [missing] * 3 + [""] * 2)]
    with beam.Pipeline() as pipeline:
        attached, problems = attach_images(pipeline | beam.Create(products), ["image"], POLICY)
        assert_that(attached | "Sizes" >> beam.Map(lambda p: (p["id"], len(p["image"]))),
                    equal_to([(f"p{i}", len(png())) for i in range(5)]
                             + [(f"p{i}", 0) for i in range(5, 10)]), label="products")
        assert_that(problems[0] | beam.Map(lambda q: (q["kind"], q["record"])),
                    equal_to([("image", missing)]), label="quarantine")
    assert Handler.hits["/good-shared.png"] == 1 and Handler.hits["/missing-shared.png"] == 1
