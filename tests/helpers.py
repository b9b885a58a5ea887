"""Small helpers shared by the test suites."""
import socket
import threading

from local_stack.services import free_port  # noqa: F401  (the tests import it from here)


class TcpProxy:
    """Forwards a loopback port to another; ``cut()`` makes the target unreachable
    (refuses new connections, drops live ones) until ``restore()``.

    A network fault, not a stand-in for any service: the services behind it are real.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self._server = None
        self._live: set = set()
        self._lock = threading.Lock()
        self._cut = False
        self.restore()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        with self._lock:
            self._server, self._cut = server, False
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True  # a connection being accepted right now is closed, not kept
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._server.close()
        with self._lock:
            for sock in list(self._live):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._live.clear()

    def _accept(self, server) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut or server is not self._server:  # cut while it was being accepted
                    client.close()
                    upstream.close()
                    return
                self._live.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass


class StoreFaults:
    """An HTTP proxy in front of the real store that injects the store's own failures:
    a ``_bulk`` request over ``max_bulk_bytes`` is answered 413 (request too large), and
    an ``_mget`` answers for the ids in ``mget_errors`` with a per-document error (a shard
    unavailable) as many times as their count says. Everything else is the store's own
    answer. A fault injector, not a stand-in: the store behind it is real.
    """

    def __init__(self, target_url: str, max_bulk_bytes: int | None = None,
                 mget_errors: dict[str, int] | None = None):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.target = target_url.removeprefix("http://")
        self.max_bulk_bytes = max_bulk_bytes
        self.mget_errors = dict(mget_errors or {})
        self.injected = {"413": 0, "mget_error": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                if path.endswith("/_bulk") and proxy.max_bulk_bytes is not None \
                        and len(body) > proxy.max_bulk_bytes:
                    proxy.injected["413"] += 1
                    return self._answer(413, b'{"error":"request too large","status":413}')
                import http.client
                upstream = http.client.HTTPConnection(proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept")}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if path.endswith("/_mget") and proxy.mget_errors:
                    data = proxy._break_mget(data)
                return self._answer(response.status, data,
                                    response.getheader("Content-Type", "application/json"))

            def _answer(self, status: int, data: bytes, kind: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *_):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _break_mget(self, data: bytes) -> bytes:
        import json

        answer = json.loads(data)
        for i, doc in enumerate(answer.get("docs", [])):
            if self.mget_errors.get(doc.get("_id"), 0) > 0:
                self.mget_errors[doc["_id"]] -= 1
                self.injected["mget_error"] += 1
                answer["docs"][i] = {"_id": doc["_id"], "_index": doc.get("_index"), "error": {
                    "type": "no_shard_available_action_exception", "reason": "injected"}}
        return json.dumps(answer).encode()

    def close(self) -> None:
        self._server.shutdown()
