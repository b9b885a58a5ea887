"""The labelling UI beside the local stack: started by ``make demo`` (and ``make up``).

The UI runs in the Airflow environment (where it also runs as a plugin), on
``127.0.0.1``. A ``demo`` user (role admin) is made on first use with a random
password, kept in ``.prodcat/ui/demo-password`` (mode 0600): the password is never
printed or logged, only where it is.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from local_stack.stack import REPO_ROOT, STATE_DIR, stop_process
from webui import users
from webui.settings import UiSettings

log = logging.getLogger("prodcat.local_stack")
logging.getLogger("httpx").setLevel(logging.WARNING)
DEMO_USER = "demo"


def airflow_python() -> str:
    airflow = os.environ.get("PRODCAT_AIRFLOW_BIN")
    if airflow:
        return str(Path(airflow).with_name("python"))
    return str(REPO_ROOT / ".venvs" / "airflow" / "bin" / "python")


def demo_user(settings: UiSettings) -> tuple[str, Path]:
    """The demo user's name and the file holding its password (made if missing)."""
    password_file = settings.users_file.with_name("demo-password")
    if DEMO_USER not in users.load(settings.users_file) or not password_file.is_file():
        password = secrets.token_urlsafe(12)
        users.add(settings.users_file, DEMO_USER, "admin", password)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
    return DEMO_USER, password_file


def queue_as_seen_by(base: str, name: str, password: str) -> dict:
    """Log in through the UI's own form and read its progress figures."""
    with httpx.Client(base_url=base, timeout=30, follow_redirects=True) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"username": name, "password": password, "csrf_token": token})
        response = client.get("/api/progress")
        response.raise_for_status()
        return response.json()


@contextlib.contextmanager
def running_ui(env: dict, port: int):
    """Serve the UI on ``127.0.0.1:port``; yield its base URL, the demo user and the password
    file, and the queue as the UI shows it."""
    settings = UiSettings.from_env({**env, "PRODCAT_UI_AUTH": "local"})
    name, password_file = demo_user(settings)
    log_path = STATE_DIR / "logs" / "ui.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as handle:
        process = subprocess.Popen(
            [airflow_python(), "-m", "webui", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT), "PRODCAT_UI_AUTH": "local"},
            stdout=handle, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if process.poll() is not None:
                raise RuntimeError(f"the labelling UI exited at start; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the labelling UI did not answer on {base}; see {log_path}")
        progress = queue_as_seen_by(base, name, password_file.read_text().strip())
        yield {"url": base + "/queue", "user": name, "password_file": password_file,
               "progress": progress}
    finally:
        stop_process(process)


def serve(seconds: float | None) -> None:
    """Keep serving: until Ctrl-C when ``seconds`` is None, else that long."""
    try:
        if seconds is None:
            print("serving until Ctrl-C", flush=True)
            while True:
                time.sleep(3600)
        time.sleep(seconds)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
