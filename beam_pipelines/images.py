"""Fetch product images once per distinct reference, within a policy, and normalise them.

References are absolute local paths, ``file://`` URIs or http(s) URLs, and the
``FetchPolicy`` says which of them may be read at all:

- a local file only under one of ``local_roots`` (after symbolic links are
  resolved), and only a regular file: never a FIFO, a device or a directory;
  relative paths are refused rather than resolved against the working directory;
- http(s) only to public addresses, unless ``allowed_networks`` names the network.
  The check is made on the address actually connected to, at connect time, for
  the first request and after every redirect, so a host name that resolves to a
  private address or a redirect to the metadata service goes nowhere. A refused
  reference is reported as refused without any connection attempt, so the
  quarantine cannot be used to probe internal ports.

Every request has a per-operation ``timeout`` and a total ``deadline`` (redirects
included), so a server that trickles bytes cannot hold a worker; transient
failures (timeouts, connection errors, HTTP 5xx and 429) are retried with
exponential backoff; an image over ``max_bytes`` is refused without reading it
all.

Every accepted image is then decoded once, here, and stored as a greyscale PNG of
the feature's size (``normalise``): an image Pillow cannot decode whole, or one
whose header claims more than ``max_pixels`` pixels, is refused at preprocess
rather than failing the trainer later, and the TFRecords hold small PNGs of one
format that the trainer's decoder always reads.
"""
from __future__ import annotations

import http.client
import io
import ipaddress
import os
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 10.0  # seconds per connect or read
    deadline: float = 30.0  # seconds per request in all, redirects included
    max_bytes: int = 5_000_000
    max_pixels: int = 50_000_000  # what an image's header may claim before it is decoded
    retries: int = 3
    backoff: float = 0.5
    concurrency: int = 16
    local_roots: tuple[str, ...] = ()  # local files only under these directories
    allowed_networks: tuple[str, ...] = ()  # http(s) to these non-public networks as well

    def __post_init__(self):
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"allowed network {network!r} is not an address or CIDR "
                                 "network") from None

    def address_allowed(self, address: str) -> bool:
        """Public addresses, and those in ``allowed_networks``."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network in self.allowed_networks:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        return ip.is_global and not ip.is_multicast

    def local_path_allowed(self, path: str) -> str | None:
        """The path with its links resolved if it lies under a local root, else None."""
        real = os.path.realpath(path)
        for root in self.local_roots:
            root = os.path.realpath(root)
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return real
        return None


class ImageError(Exception):
    """Why an image could not be used; ``transient`` ones are worth retrying."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class _Request:
    """One request's deadline and the sockets it opened, shared by its connections."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.ends = time.monotonic() + policy.deadline
        self.connections: list[http.client.HTTPConnection] = []

    def time_left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise ImageError(f"not done within the {self.policy.deadline:g} s deadline")
        return min(self.policy.timeout, left)

    def shorten_timeouts(self) -> None:
        left = self.time_left()
        for connection in self.connections:
            if connection.sock is not None:
                connection.sock.settimeout(left)

    def connect(self, address, timeout=None, source_address=None):
        """``socket.create_connection``, to allowed addresses only."""
        host, port = address
        try:
            candidates = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            raise ImageError(f"unreachable: cannot resolve the host ({err})", transient=True) \
                from None
        allowed = [c for c in candidates if self.policy.address_allowed(c[4][0])]
        if not allowed:
            raise ImageError("refused by the fetch policy: the host is not a public address "
                             "(see PRODCAT_IMAGE_ALLOWED_NETWORKS)")
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in allowed:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.time_left())
                sock.connect(sockaddr)
                return sock
            except OSError as err:
                sock.close()
                error = err
        raise error


def _connection_class(base, request: _Request):
    class Guarded(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = request.connect

        def connect(self):
            super().connect()
            request.connections.append(self)

    return Guarded


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, request: _Request):
        super().__init__()
        self.connection = _connection_class(http.client.HTTPConnection, request)

    def http_open(self, req):
        return self.do_open(self.connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, request: _Request):
        super().__init__()
        self.connection = _connection_class(http.client.HTTPSConnection, request)

    def https_open(self, req):
        return self.do_open(self.connection, req, context=self._context)


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


def _opener(request: _Request) -> urllib.request.OpenerDirector:
    """http and https only (no proxy from the environment, no ftp, no file, no data)."""
    opener = urllib.request.OpenerDirector()
    for handler in (_HTTPHandler(request), _HTTPSHandler(request), _Redirects(),
                    urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _too_large(policy: FetchPolicy, detail: str = "") -> ImageError:
    return ImageError(f"larger than the {policy.max_bytes:,}-byte limit{detail}")


def _read_http(ref: str, policy: FetchPolicy) -> bytes:
    request = _Request(policy)
    try:
        with _opener(request).open(urllib.request.Request(
                ref, headers={"User-Agent": "prodcat-image-fetcher"}),
                timeout=request.time_left()) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise _too_large(policy, f" ({length} bytes)")
            chunks, size = [], 0
            while True:
                request.shorten_timeouts()
                chunk = response.read1(65536)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > policy.max_bytes:
                    raise _too_large(policy)
                chunks.append(chunk)
    except urllib.error.HTTPError as err:
        raise ImageError(f"HTTP {err.code}", transient=err.code >= 500 or err.code == 429) from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, ImageError):
            raise err.reason from None
        raise ImageError(f"unreachable: {err.reason}", transient=True) from None
    except (TimeoutError, ConnectionError, http.client.IncompleteRead) as err:
        raise ImageError(f"unreachable: {err or type(err).__name__}", transient=True) from None
    except (OSError, http.client.HTTPException) as err:
        raise ImageError(f"bad response: {type(err).__name__}: {err}") from None


def _read_local(path: str, policy: FetchPolicy) -> bytes:
    if not os.path.isabs(path):
        raise ImageError("a relative path: image references are absolute paths, file:// URIs "
                         "or http(s) URLs")
    real = policy.local_path_allowed(path)
    if real is None:
        raise ImageError("refused by the fetch policy: outside the allowed image directories "
                         "(see PRODCAT_IMAGE_ROOTS)")
    try:
        # Non-blocking, so opening a FIFO returns at once; then only a regular file is read.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError("not a regular file")
        data = handle.read(policy.max_bytes + 1)
    if len(data) > policy.max_bytes:
        raise _too_large(policy)
    return data


def read(ref: str, policy: FetchPolicy) -> bytes:
    """The reference's bytes as stored, read within the policy (no decoding, no retries);
    ImageError with the reason otherwise. The labelling UI serves images through it."""
    if "\x00" in ref:
        raise ImageError("not a valid reference: it holds a NUL character")
    try:
        parsed = urllib.parse.urlsplit(ref)
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as err:
        raise ImageError(f"not a valid URL: {err}") from None
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise ImageError("not a valid URL: no host")
        return _read_http(ref, policy)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ImageError("refused by the fetch policy: a file on another host")
        return _read_local(urllib.parse.unquote(parsed.path), policy)
    if scheme == "":
        return _read_local(ref, policy)
    raise ImageError(f"unsupported scheme {scheme!r}")


def normalise(data: bytes, size: int, policy: FetchPolicy) -> bytes:
    """Decode an image whole and return it as a ``size`` x ``size`` greyscale PNG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > policy.max_pixels:
                raise ImageError(f"{width}x{height} pixels, over the {policy.max_pixels:,}-pixel "
                                 "limit")
            image.draft("L", (size, size))  # JPEG decodes at a reduced scale: cheaper
            grey = image.convert("L")  # decodes every pixel: a truncated or corrupt file fails
        grey = grey.resize((size, size), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        grey.save(out, "PNG")
        return out.getvalue()
    except ImageError:
        raise
    except Exception as err:  # noqa: BLE001 (decoders raise many kinds; any means unusable)
        raise ImageError(f"does not decode as an image ({type(err).__name__})") from None


def fetch(ref: str, policy: FetchPolicy, size: int | None = None) -> bytes:
    """The image's bytes (normalised to ``size`` when given), or ImageError with the reason
    after the allowed retries."""
    for attempt in range(policy.retries + 1):
        try:
            data = read(ref, policy)
            return normalise(data, size, policy) if size else _check_decodes(data, policy)
        except ImageError as err:
            if not err.transient or attempt == policy.retries:
                raise
            time.sleep(policy.backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def _check_decodes(data: bytes, policy: FetchPolicy) -> bytes:
    normalise(data, 1, policy)
    return data


def fetch_all(refs: list[str], policy: FetchPolicy,
              size: int | None = None) -> list[tuple[str, bytes | None, str | None]]:
    """``(ref, bytes or None, reason or None)`` for each ref, ``concurrency`` at a time.

    Whatever goes wrong with one reference is its reason; it never stops the others.
    """
    def one(ref):
        try:
            return ref, fetch(ref, policy, size), None
        except ImageError as err:
            return ref, None, str(err)
        except Exception as err:  # noqa: BLE001 (one hostile reference must not stop a run)
            return ref, None, f"unusable ({type(err).__name__}: {err})"

    with ThreadPoolExecutor(max_workers=max(1, min(policy.concurrency, len(refs)))) as pool:
        return list(pool.map(one, refs))
