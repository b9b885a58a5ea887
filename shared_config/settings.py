"""Service endpoints and tunables, read from environment variables.

Every variable has a default that works with the local stack (``make demo``);
docker-compose and production set them to their own services. The README's
configuration table lists the same names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

from shared_config.paths import default_prefix


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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
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
            updater_batch_size=_positive(env, "PRODCAT_UPDATER_BATCH_SIZE", "500", int),
        )

    def as_env(self) -> dict[str, str]:
        """The same settings as environment variables, for a child process."""
        return {f"PRODCAT_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}


def _positive(env, name: str, default: str, kind):
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value
