"""Service endpoints and tunables, read from environment variables.

Every variable has a default that works with the local stack (``make demo``);
docker-compose and production set them to their own services. The README's
configuration table lists the same names.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path

from shared_config.paths import default_prefix

# Where the public data sets and the demo catalogue (with its images) are kept.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / ".prodcat" / "sources"


def data_dir(env=None) -> Path:
    """``PRODCAT_DATA_DIR`` or ``.prodcat/sources`` in the project's checkout."""
    env = os.environ if env is None else env
    return Path(env.get("PRODCAT_DATA_DIR") or DEFAULT_DATA_DIR)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<a URL that does not parse>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class Settings:
    prefix: str
    store_backend: str
    store_url: str
    store_index: str
    runs_index: str
    amqp_url: str
    predictions_queue: str
    predictions_queue_max_length: int
    updater_max_docs_per_second: float
    updater_batch_size: int
    amqp_heartbeat: int
    # Where preprocessing may read images: local files only under image_roots; http(s)
    # only to public addresses and to image_allowed_networks (see beam_pipelines/images.py).
    image_roots: tuple[str, ...]
    image_allowed_networks: tuple[str, ...]
    # the image tower's vector size, for an Elasticsearch dense_vector field (store/vectors.py)
    image_embedding_dims: int = 64
    # updater processes the local stack starts on the one queue (versioned writes keep them
    # safe against each other); each keeps to updater_max_docs_per_second on its own
    updaters: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        backend = env.get("PRODCAT_STORE_BACKEND", "opensearch")
        if backend not in ("opensearch", "elasticsearch"):
            raise ValueError(
                f"PRODCAT_STORE_BACKEND={backend!r}: use 'opensearch' or 'elasticsearch'")
        return cls(
            prefix=default_prefix(env),
            store_backend=backend,
            store_url=env.get("PRODCAT_STORE_URL", "http://127.0.0.1:9200"),
            store_index=env.get("PRODCAT_STORE_INDEX", "products"),
            runs_index=env.get("PRODCAT_RUNS_INDEX", "prodcat-runs"),
            amqp_url=env.get("PRODCAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            predictions_queue=env.get("PRODCAT_PREDICTIONS_QUEUE", "prodcat.predictions"),
            predictions_queue_max_length=_positive(
                env, "PRODCAT_PREDICTIONS_QUEUE_MAX_LENGTH", "200000", int),
            updater_max_docs_per_second=_positive(
                env, "PRODCAT_UPDATER_MAX_DOCS_PER_SECOND", "2000", float),
            updater_batch_size=_positive(env, "PRODCAT_UPDATER_BATCH_SIZE", "5000", int),
            amqp_heartbeat=_positive(env, "PRODCAT_AMQP_HEARTBEAT", "60", int),
            image_roots=tuple(str(Path(p).expanduser().resolve()) for p in env.get(
                "PRODCAT_IMAGE_ROOTS", str(data_dir(env))).split(os.pathsep) if p.strip()),
            image_allowed_networks=tuple(n.strip() for n in env.get(
                "PRODCAT_IMAGE_ALLOWED_NETWORKS", "").split(",") if n.strip()),
            image_embedding_dims=_positive(env, "PRODCAT_IMAGE_EMBEDDING_DIMS", "64", int),
            updaters=_positive(env, "PRODCAT_UPDATERS", "1", int),
        )

    def as_env(self) -> dict[str, str]:
        """The same settings as environment variables, for a child process."""
        separators = {"image_roots": os.pathsep, "image_allowed_networks": ","}
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            env[f"PRODCAT_{f.name.upper()}"] = separators[f.name].join(value) if f.name in separators else str(value)
        return env


def _positive(env, name: str, default: str, kind):
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value
