"""Fetch product images once per distinct reference, politely, and check they decode.

References are local paths, ``file://`` URIs or http(s) URLs. Fetching is bounded
(a thread pool of ``concurrency``), each request has a timeout, transient
failures (timeouts, connection errors, HTTP 5xx and 429) are retried with
exponential backoff, and an image over ``max_bytes`` is refused without reading
it all. The raw bytes go into the TFRecords, as the original system stored them,
so the trainer never makes a request.
"""
from __future__ import annotations

import io
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 10.0
    max_bytes: int = 5_000_000
    retries: int = 3
    backoff: float = 0.5
    concurrency: int = 16


class ImageError(Exception):
    """Why an image could not be used; ``transient`` ones are worth retrying."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def _read_limited(handle, max_bytes: int) -> bytes:
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"larger than the {max_bytes:,}-byte limit")
    return data


def _read(ref: str, policy: FetchPolicy) -> bytes:
    parsed = urllib.parse.urlparse(ref)
    if parsed.scheme in ("http", "https"):
        request = urllib.request.Request(ref, headers={"User-Agent": "prodcat-image-fetcher"})
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > policy.max_bytes:
                    raise ImageError(f"larger than the {policy.max_bytes:,}-byte limit ({length} bytes)")
                return _read_limited(response, policy.max_bytes)
        except urllib.error.HTTPError as err:
            raise ImageError(f"HTTP {err.code}", transient=err.code >= 500 or err.code == 429) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ImageError(f"unreachable: {reason}", transient=True) from None
    if parsed.scheme in ("file", ""):
        path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else ref
        try:
            with open(path, "rb") as handle:
                return _read_limited(handle, policy.max_bytes)
        except OSError as err:
            raise ImageError(f"cannot read file: {err.strerror}") from None
    raise ImageError(f"unsupported scheme {parsed.scheme!r}")


def _check_decodes(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"does not decode as an image ({type(err).__name__})") from None


def fetch(ref: str, policy: FetchPolicy) -> bytes:
    """The image's bytes, or ImageError with the reason after the allowed retries."""
    for attempt in range(policy.retries + 1):
        try:
            data = _read(ref, policy)
            _check_decodes(data)
            return data
        except ImageError as err:
            if not err.transient or attempt == policy.retries:
                raise
            time.sleep(policy.backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def fetch_all(refs: list[str], policy: FetchPolicy) -> list[tuple[str, bytes | None, str | None]]:
    """``(ref, bytes or None, reason or None)`` for each ref, ``concurrency`` at a time."""
    def one(ref):
        try:
            return ref, fetch(ref, policy), None
        except ImageError as err:
            return ref, None, str(err)

    with ThreadPoolExecutor(max_workers=max(1, min(policy.concurrency, len(refs)))) as pool:
        return list(pool.map(one, refs))
