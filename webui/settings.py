"""The UI's settings, read from environment variables (the README's configuration table).

The store and runs index come from ``shared_config.settings``; the rest is the UI's own:

- ``PRODCAT_UI_AUTH``: ``local`` (users from ``PRODCAT_UI_USERS``, a JSON file of
  scrypt-hashed passwords managed with ``python -m webui.users``) or ``airflow`` (the
  user of the Airflow UI's session, when the app is mounted in the api-server);
- ``PRODCAT_UI_DIR``: where the users file and the session secret live by default
  (``.prodcat/ui`` in the checkout);
- ``PRODCAT_UI_SECRET``: the key that signs session cookies; by default a random key
  kept in ``{PRODCAT_UI_DIR}/secret`` (created with mode 0600 at first start);
- ``PRODCAT_AIRFLOW_URL``: the Airflow UI, for links to a run's DAG run (by default
  ``http://localhost:8080``, or the same origin when mounted in Airflow);
- ``PRODCAT_TENSORBOARD_URL``: a TensorBoard serving the runs' logs, for links (none
  by default: the run page then shows the log directory);
- ``PRODCAT_UI_FIGURES``: a directory of benchmark plots (``label_efficiency_*.png``,
  ``active_learning_*.png``) shown on run pages; the checkout's ``docs/`` by default.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared_config.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_UI_DIR = PROJECT_DIR / ".prodcat" / "ui"
AUTH_MODES = ("local", "airflow")


class UiConfigError(ValueError):
    """A UI setting that cannot be used."""


@dataclass(frozen=True)
class UiSettings:
    store: Settings
    auth: str
    users_file: Path
    secret: str
    airflow_url: str
    tensorboard_url: str
    figures_dir: Path
    page_size: int = 24

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> UiSettings:
        env = os.environ if env is None else env
        auth = env.get("PRODCAT_UI_AUTH", "local")
        if auth not in AUTH_MODES:
            raise UiConfigError(f"PRODCAT_UI_AUTH must be one of {AUTH_MODES}, not {auth!r}")
        ui_dir = Path(env.get("PRODCAT_UI_DIR") or DEFAULT_UI_DIR)
        return cls(store=Settings.from_env(env), auth=auth,
                   users_file=Path(env.get("PRODCAT_UI_USERS") or ui_dir / "users.json"),
                   secret=env.get("PRODCAT_UI_SECRET") or _secret(ui_dir / "secret"),
                   # inside Airflow, its pages are on the same origin
                   airflow_url=env.get("PRODCAT_AIRFLOW_URL", "" if auth == "airflow"
                                       else "http://localhost:8080").rstrip("/"),
                   tensorboard_url=env.get("PRODCAT_TENSORBOARD_URL", "").rstrip("/"),
                   figures_dir=Path(env.get("PRODCAT_UI_FIGURES") or PROJECT_DIR / "docs"))


def _secret(path: Path) -> str:
    """The key in ``path``, made (random, mode 0600) if there is none yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
