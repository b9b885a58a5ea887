"""One store API over the ``elasticsearch`` and ``opensearch-py`` clients.

The official Elasticsearch client refuses OpenSearch-compatible servers (and the
other way round), so the backend is chosen by ``PRODCAT_STORE_BACKEND``. Queries,
paging and bulk logic are written once here; only the calls that differ between
the two APIs (point in time, search arguments) live in the two small backends.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator

from shared_config.settings import Settings

log = logging.getLogger(__name__)
# Products a page when reading the whole index: the most a search may return by default
# (Elasticsearch's index.max_result_window). Each page sorted by id costs the store a sorted
# pass over its index: on osmem at 100,000 products, pages of 1,000 took 46.7 s, of 10,000 7.6 s.
PAGE_SIZE = 10_000
# The orders a whole-index read can take: by product id (the same on any store, whatever the
# order the products were indexed in), or the point in time's own document order
# (``_shard_doc``, its tiebreaker: no sort over the index per page; Elasticsearch >= 7.12)
READ_ORDERS = {"id": [{"id": "asc"}], "index": [{"_shard_doc": "asc"}]}

PRODUCT_MAPPINGS = {
    "dynamic": True,
    "properties": {
        "id": {"type": "keyword"},
        "group_id": {"type": "keyword"},
        "title": {"type": "text"},
        "description": {"type": "text"},
        "brand": {"type": "keyword"},
        "raw_category": {"type": "text"},
        "gender": {"type": "keyword"},
        "size": {"type": "keyword"},
        "price": {"type": "float"},
        "image": {"type": "keyword"},
        "rule_labels": {"type": "keyword"},
        "exclusive_label": {"type": "keyword"},
        "label_source": {"type": "keyword"},
        # a person's label (webui/labelling.py): who, when, the label's own version
        "label_none": {"type": "boolean"},
        "labelled_by": {"type": "keyword"},
        "labelled_at": {"type": "date"},
        "label_version": {"type": "long"},
        "label_history": {"type": "object", "enabled": False},
        "prediction_run_id": {"type": "keyword"},
        "prediction_version": {"type": "long"},
        "prediction_path": {"type": "keyword"},
        "prediction": {"type": "object", "enabled": False},
        # visual neighbours (similarity/neighbours.py), versioned apart from predictions
        "similar_products": {"type": "object", "enabled": False},
        "similar_run_id": {"type": "keyword"},
        "similar_version": {"type": "long"},
        "similar_group": {"type": "keyword"},
        "similar_level": {"type": "integer"},
        # people's verdicts on the neighbours (webui/similarity.py)
        "similarity_judgements": {"type": "object", "enabled": False},
        "similarity_judged_at": {"type": "date"},
        # the embedding as words, for the store's full-text search (similarity/tokens.py)
        "image_tokens": {"type": "text", "analyzer": "whitespace", "norms": False,
                         "index_options": "freqs"},
        # what active learning asks the labelling team for (active_learning/queue.py)
        "label_request": {"properties": {
            "run_id": {"type": "keyword"}, "strategy": {"type": "keyword"},
            "score": {"type": "float"}, "rank": {"type": "integer"},
            "split": {"type": "keyword"}, "requested_at": {"type": "date"}}},
    },
}


class StoreError(RuntimeError):
    """The store rejected a request or some documents of a bulk request."""


# What became of one versioned update (``ProductStore.update_if_newer``).
APPLIED = "applied"
ALREADY_APPLIED = "already_applied"  # the same version is there: a re-delivery
SUPERSEDED = "superseded"  # a newer run's prediction is there: left alone
TRANSIENT = "transient"  # the store was busy or failing: try again later
REJECTED = "rejected"  # the store refused it (unknown product, bad field): ``rejected: reason``
_CONFLICT_ATTEMPTS = 5


def _ascii_json(data, default) -> str:
    """Request bodies as ASCII JSON: a string holding a lone surrogate (valid JSON, and a
    feed's product may carry one) is sent escaped rather than failing the request."""
    return json.dumps(data, default=default, ensure_ascii=True, separators=(",", ":"))


class _OpenSearchBackend:
    def __init__(self, url: str):
        from opensearchpy import OpenSearch, helpers
        from opensearchpy.serializer import JSONSerializer

        class AsciiSerializer(JSONSerializer):
            def dumps(self, data):
                return data if isinstance(data, str) else _ascii_json(data, self.default)

        self.client = OpenSearch(hosts=[url], timeout=60, serializer=AsciiSerializer())
        self.helpers = helpers

    def search(self, index: str | None, body: dict) -> dict:
        return self.client.search(index=index, body=body)

    def open_pit(self, index: str, keep_alive: str) -> str:
        return self.client.create_pit(index=index, params={"keep_alive": keep_alive})["pit_id"]

    def close_pit(self, pit_id: str) -> None:
        self.client.delete_pit(body={"pit_id": [pit_id]})

    def mget(self, index: str, ids: list[str]) -> list[dict]:
        return self.client.mget(index=index, body={"ids": ids})["docs"]

    def transient(self, err: Exception) -> bool:
        from opensearchpy import ConnectionError, ConnectionTimeout, TransportError

        if isinstance(err, (ConnectionError, ConnectionTimeout)):
            return True
        return isinstance(err, TransportError) and _transient_status(err.status_code)


class _ElasticsearchBackend:
    def __init__(self, url: str):
        from elasticsearch import Elasticsearch, helpers
        from elasticsearch.serializer import JsonSerializer, NdjsonSerializer

        class AsciiJson(JsonSerializer):
            def json_dumps(self, data) -> bytes:
                return _ascii_json(data, self.default).encode("ascii")

        class AsciiNdjson(NdjsonSerializer):
            def json_dumps(self, data) -> bytes:
                return _ascii_json(data, self.default).encode("ascii")

        json_, ndjson = AsciiJson(), AsciiNdjson()
        self.client = Elasticsearch(url, request_timeout=60, serializers={
            "application/json": json_, "application/vnd.elasticsearch+json": json_,
            "application/x-ndjson": ndjson, "application/vnd.elasticsearch+x-ndjson": ndjson})
        self.helpers = helpers

    def search(self, index: str | None, body: dict) -> dict:
        return self.client.search(index=index, **body).body

    def open_pit(self, index: str, keep_alive: str) -> str:
        return self.client.open_point_in_time(index=index, keep_alive=keep_alive)["id"]

    def close_pit(self, pit_id: str) -> None:
        self.client.close_point_in_time(id=pit_id)

    def mget(self, index: str, ids: list[str]) -> list[dict]:
        return self.client.mget(index=index, ids=ids)["docs"]

    def transient(self, err: Exception) -> bool:
        from elastic_transport import ConnectionError, ConnectionTimeout
        from elasticsearch import ApiError

        if isinstance(err, (ConnectionError, ConnectionTimeout)):
            return True
        return isinstance(err, ApiError) and _transient_status(err.meta.status)


def _transient_status(status) -> bool:
    """Worth retrying: overloaded, failing, or the index briefly missing (being recreated).
    A 400 or 413 (a request the store will never take) is not."""
    return isinstance(status, int) and (status in (404, 408, 429) or status >= 500)


BACKENDS = {"opensearch": _OpenSearchBackend, "elasticsearch": _ElasticsearchBackend}


class ProductStore:
    """The product index: create it, load it, page through it, update it."""

    def __init__(self, backend: str, url: str, index: str, mappings: dict | None = None,
                 vector_dims: int | None = None):
        """``vector_dims``: on Elasticsearch, the product index also gets a quantised
        ``dense_vector`` field of that size (``store/vectors.py``)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown store backend {backend!r}; use one of {sorted(BACKENDS)}")
        self.backend = BACKENDS[backend](url)
        self.client = self.backend.client
        self.index = index
        self.mappings = mappings or PRODUCT_MAPPINGS
        if vector_dims and backend == "elasticsearch" and mappings is None:
            from store.vectors import vector_mapping

            self.mappings = {**self.mappings, "properties": {
                **self.mappings["properties"], **vector_mapping(vector_dims)}}

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ProductStore:
        settings = settings or Settings.from_env()
        return cls(settings.store_backend, settings.store_url, settings.store_index,
                   vector_dims=settings.image_embedding_dims)

    def create_index(self, recreate: bool = False) -> None:
        if self.client.indices.exists(index=self.index):
            if not recreate:
                return
            self.client.indices.delete(index=self.index)
        self.client.indices.create(index=self.index, body={"mappings": self.mappings})

    def refresh(self) -> None:
        self.client.indices.refresh(index=self.index)

    def count(self, query: dict | None = None) -> int:
        body = {"query": query} if query else None
        return int(self.client.count(index=self.index, body=body)["count"])

    def search(self, query: dict, size: int = 10) -> list[dict]:
        body = {"size": size, "query": query, "sort": [{"id": "asc"}]}
        return [hit["_source"] for hit in self.backend.search(self.index, body)["hits"]["hits"]]

    def is_transient(self, err: Exception) -> bool:
        """Whether a failed request is worth retrying as it is (the store unreachable,
        overloaded, or its index being recreated), rather than never going to succeed."""
        return self.backend.transient(err)

    def sources(self, ids: list[str]) -> dict[str, dict]:
        """``{id: document}`` of the ids that exist, in one request."""
        return {doc["_id"]: doc.get("_source") or {} for doc in self.backend.mget(self.index, ids)
                if doc.get("found")}

    def get(self, product_id: str) -> dict:
        return self.client.get(index=self.index, id=product_id)["_source"]

    def _bulk(self, actions: Iterable[dict], chunk_size: int) -> tuple[int, dict[str, str]]:
        """Send actions in chunks; return how many succeeded and why each other failed.

        Connection errors raise (the caller may retry the whole batch); a document
        the store rejected is reported by id with the store's reason.
        """
        done, failures = 0, {}
        for ok, item in self.backend.helpers.streaming_bulk(
            self.client, actions, chunk_size=chunk_size, raise_on_error=False,
            raise_on_exception=True, max_retries=3,
        ):
            if ok:
                done += 1
            else:
                (result,) = item.values()
                error = result.get("error", {})
                reason = error.get("reason", error) if isinstance(error, dict) else error
                failures[result.get("_id")] = f"{result.get('status')}: {reason}"
        return done, failures

    def index_some(self, products: Iterable[dict],
                   chunk_size: int = 1000) -> tuple[int, dict[str, str]]:
        """Index products; return how many the store took and why it refused each other."""
        actions = ({"_op_type": "index", "_index": self.index, "_id": p["id"], "_source": p}
                   for p in products)
        return self._bulk(actions, chunk_size)

    def index_products(self, products: Iterable[dict], chunk_size: int = 1000) -> int:
        """Index products; raise StoreError if the store refused any."""
        done, failures = self.index_some(products, chunk_size)
        if failures:
            raise StoreError(f"{len(failures)} products were rejected, first: "
                             f"{list(failures.items())[:3]}")
        return done

    def update_partial(self, updates: Iterable[tuple[str, dict]],
                       chunk_size: int = 500) -> dict[str, str]:
        """Apply ``(product_id, fields)`` partial updates; return the rejected ids and why."""
        actions = ({"_op_type": "update", "_index": self.index, "_id": pid, "doc": fields}
                   for pid, fields in updates)
        return self._bulk(actions, chunk_size)[1]

    def update_if_newer(self, updates: dict[str, tuple[int, dict]], chunk_size: int = 500,
                        version_field: str = "prediction_version") -> dict[str, str]:
        """Apply ``{product_id: (version, fields)}`` where the product holds no newer version
        in ``version_field`` (the fields set it: each versioned part of a product has its own).

        An older run never overwrites a newer one and a re-delivered update is not
        applied twice, whatever the order of the writers (see ``write_if``). The
        fields *replace* what was there (an object is not merged into the older one).
        Returns an outcome per id (``APPLIED``, ``ALREADY_APPLIED``, ``SUPERSEDED``,
        ``TRANSIENT`` or ``"rejected: reason"``); a failed request raises (see
        ``is_transient``).
        """
        def decide(source: dict, update: tuple[int, dict]):
            version, fields = update
            stored = source.get(version_field)
            if not isinstance(stored, int) or isinstance(stored, bool):
                stored = None
            if stored is not None and stored > version:
                return SUPERSEDED
            if stored == version:
                return ALREADY_APPLIED
            return fields

        return self.write_if(updates, decide, chunk_size)

    def write_if(self, items: dict[str, object], decide, chunk_size: int = 500) -> dict[str, str]:
        """Write fields into products where ``decide`` allows, with optimistic concurrency.

        Read each product with its sequence number; ``decide(source, item)`` returns the
        fields to set (they replace what was there) or an outcome string to leave the
        product alone; write the product back only if it has not changed since
        (``if_seq_no``), else read it again. Returns an outcome per id: ``APPLIED``,
        what ``decide`` said, ``TRANSIENT`` (a per-document read error, a shard
        unavailable, or still changing: try again later) or ``"rejected: reason"``.
        """
        outcome: dict[str, str] = {}
        todo = dict(items)
        for _ in range(_CONFLICT_ATTEMPTS):
            if not todo:
                break
            actions = []
            for doc in self.backend.mget(self.index, list(todo)):
                product_id = doc["_id"]
                if "error" in doc:  # a shard unavailable, say: not the product's fault
                    outcome[product_id] = TRANSIENT
                    continue
                if not doc.get("found"):
                    outcome[product_id] = f"{REJECTED}: 404: no such product"
                    continue
                source = doc.get("_source") or {}
                fields = decide(source, todo[product_id])
                if isinstance(fields, str):
                    outcome[product_id] = fields
                    continue
                actions.append({"_op_type": "index", "_index": self.index, "_id": product_id,
                                "_source": {**source, **fields}, "if_seq_no": doc["_seq_no"],
                                "if_primary_term": doc["_primary_term"]})
            failures = self._bulk(actions, chunk_size)[1]
            conflicts = {}
            for action in actions:
                product_id = action["_id"]
                reason = failures.get(product_id)
                if reason is None:
                    outcome[product_id] = APPLIED
                elif reason.startswith("409"):
                    conflicts[product_id] = todo[product_id]  # changed since read: look again
                elif reason.startswith(("429", "5")):
                    outcome[product_id] = TRANSIENT
                else:
                    outcome[product_id] = f"{REJECTED}: {reason}"
            todo = conflicts
        outcome.update({product_id: TRANSIENT for product_id in todo})
        return outcome

    def iter_products(self, page_size: int = PAGE_SIZE, keep_alive: str = "5m",
                      order: str = "id") -> Iterator[dict]:
        """Every product once, in pages, over a point in time with ``search_after``, in
        ``order`` (``READ_ORDERS``: ``"id"``, or ``"index"``, the store's own and cheaper)."""
        if order not in READ_ORDERS:
            raise ValueError(f"order {order!r}: use one of {sorted(READ_ORDERS)}")
        pit_id = self.backend.open_pit(self.index, keep_alive)
        try:
            search_after = None
            while True:
                body = {"size": page_size, "sort": READ_ORDERS[order],
                        "pit": {"id": pit_id, "keep_alive": keep_alive},
                        "query": {"match_all": {}}}
                if search_after is not None:
                    body["search_after"] = search_after
                hits = self.backend.search(None, body)["hits"]["hits"]
                if not hits:
                    return
                for hit in hits:
                    yield hit["_source"]
                search_after = hits[-1]["sort"]
        finally:
            try:
                self.backend.close_pit(pit_id)
            except Exception as err:  # noqa: BLE001 (the PIT expires by itself; keep the real error)
                log.warning("could not close point in time: %s", err)
