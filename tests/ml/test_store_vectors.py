"""The Elasticsearch dense_vector path: the mapping and the knn request as the official
client sends them (no Elasticsearch can run here; see ``RecordingServer``)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from store import vectors
from store.client import PRODUCT_MAPPINGS, ProductStore
from tests.helpers import free_port


class RecordingServer:
    """A test double of an Elasticsearch node: it records each request and answers with the
    smallest well-formed reply (and the product header the official client insists on)."""

    def __init__(self, replies: dict[str, dict]):
        self.requests: list[tuple[str, str, dict]] = []
        recorded, answers = self.requests, replies

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                recorded.append((self.command, self.path.split("?")[0], body))
                reply = next((r for suffix, r in answers.items()
                              if self.path.split("?")[0].endswith(suffix)), {})
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


def test_the_mapping_is_quantised_hnsw_and_checked():
    field = vectors.vector_mapping(64)["image_embedding"]
    assert field["type"] == "dense_vector" and field["dims"] == 64
    assert field["index_options"]["type"] == "int8_hnsw" and field["similarity"] == "dot_product"
    for bad in ({"dims": 0}, {"dims": 5000}, {"dims": 64, "quantisation": "pq"},
                {"dims": 32, "quantisation": "bbq_hnsw"}):
        with pytest.raises(ValueError):
            vectors.vector_mapping(**bad)
    es = ProductStore("elasticsearch", "http://127.0.0.1:1", "p", vector_dims=64)
    assert es.mappings["properties"]["image_embedding"]["dims"] == 64
    osmem = ProductStore("opensearch", "http://127.0.0.1:1", "p", vector_dims=64)
    assert "image_embedding" not in osmem.mappings["properties"]  # osmem has no dense_vector
    assert "image_embedding" not in PRODUCT_MAPPINGS["properties"]


def test_the_knn_query_filters_inside_the_search_and_leaves_the_product_out():
    body = vectors.knn_query([0.6, 0.8], k=10, exclude_id="p1", category="Tops > Knits")
    knn = body["knn"]
    assert knn["k"] == 10 and knn["num_candidates"] == 20 and knn["field"] == "image_embedding"
    assert knn["filter"] == {"bool": {"filter": [{"term": {"prediction_path": "Tops > Knits"}}],
                                      "must_not": [{"ids": {"values": ["p1"]}}]}}
    assert "filter" not in vectors.knn_query([1.0], k=3)["knn"]
    for bad in ({"vector": []}, {"vector": [float("nan")]}, {"vector": [1.0], "k": 0}):
        with pytest.raises(ValueError):
            vectors.knn_query(**{"vector": [1.0], **bad})
    product = {"prediction_path": ["Tops", "Tops > Knits"]}
    assert vectors.restriction(product, 2) == "Tops > Knits"
    assert vectors.restriction(product, 5) == "Tops > Knits"  # a shorter path: the deepest
    assert vectors.restriction(product, 1) == "Tops" and vectors.restriction(product, 0) is None


def test_the_official_client_sends_the_index_and_the_knn_search_as_built():
    product = {"id": "p1", "image_embedding": [0.6, 0.8], "prediction_path": ["Tops",
                                                                          "Tops > Knits"]}
    server = RecordingServer({"/products/_doc/p1": {"_id": "p1", "found": True,
                                                    "_source": product},
                              "/products/_search": {"hits": {"hits": [
                                  {"_id": "p2", "_score": 0.97, "_source": {"title": "t"}}]}}})
    try:
        store = ProductStore("elasticsearch", server.url, "products", vector_dims=2)
        store.client.indices.create(index="products", mappings=store.mappings)
        found = vectors.similar_on_request(store, "p1", k=5, level=2)
    finally:
        server.close()
    assert found == [{"id": "p2", "score": 0.97, "title": "t"}]
    (_, _, created), (_, _, _), (method, path, search) = server.requests
    assert created["mappings"]["properties"]["image_embedding"]["dims"] == 2
    assert (method, path) == ("POST", "/products/_search")
    assert search["knn"] == vectors.knn_query([0.6, 0.8], 5, "p1", "Tops > Knits")["knn"]
