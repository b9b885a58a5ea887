"""Who is asking, and may they: sessions, roles, CSRF.

- ``local``: a login form checks the users file (``webui/users.py``; five failures for
  one name within five minutes lock that name out for the rest of them); the session
  is a cookie signed with the UI's secret (Starlette's ``SessionMiddleware``), and
  the user's role is read from the file on every request, so removing a user or
  changing a role takes effect at once.
- ``airflow``: mounted in the api-server, the UI takes the user of the Airflow
  UI's own session (its JWT cookie), resolved by Airflow's auth manager. The
  plugin interface gives the user and the auth manager's decisions, not Airflow's
  role names, so: anyone the auth manager lets see the custom view ``prodcat`` is
  a labeller; anyone it lets read the configuration (Op and Admin with the simple
  auth manager, "can read Configurations" with FAB) is an admin. Login, logout
  and passwords are Airflow's.

Every write is a POST carrying the session's CSRF token (a hidden form field),
compared in constant time; a missing or wrong token writes nothing.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from fastapi import Request

from webui import users

log = logging.getLogger("prodcat.webui")
AIRFLOW_RESOURCE = "prodcat"
MAX_FAILURES, LOCKOUT_SECONDS = 5, 300.0


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Forbidden(Exception):
    """The user may not see this page."""


class NotLoggedIn(Exception):
    """No user: the page sends the browser to a login."""


class BadCsrf(Exception):
    """A write without the session's CSRF token."""


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, form) -> None:
    expected = request.session.get("csrf")
    given = form.get("csrf_token")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise BadCsrf()


class Auth:
    def __init__(self, settings):
        self.settings = settings
        self._failures: dict[str, list[float]] = {}

    async def user(self, request: Request) -> User | None:
        if self.settings.auth == "airflow":
            return await self._airflow_user(request)
        name = request.session.get("user")
        if not name:
            return None
        entry = users.load(self.settings.users_file).get(name)
        return User(name, entry["role"]) if entry else None

    def login(self, request: Request, name: str, password: str) -> User | None:
        """The user, or None for a wrong name or password, or while the name is locked out
        (``MAX_FAILURES`` failed logins within ``LOCKOUT_SECONDS``: password guessing)."""
        now = time.monotonic()
        recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_SECONDS]
        if len(recent) >= MAX_FAILURES:
            log.warning("login refused: too many failures for one user name")
            return None
        role = users.authenticate(self.settings.users_file, name, password)
        if role is None:
            log.info("failed login for a user name of %d characters", len(name))
            if len(self._failures) > 10_000:  # bounded memory under a flood of names
                self._failures.clear()
            self._failures[name] = [*recent, now]
            return None
        self._failures.pop(name, None)
        request.session.clear()  # a new session on login: nothing carried over
        request.session["user"] = name
        csrf_token(request)
        return User(name, role)

    @staticmethod
    def logout(request: Request) -> None:
        request.session.clear()

    @staticmethod
    async def _airflow_user(request: Request) -> User | None:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

        token = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
        if not token:
            return None
        manager = get_auth_manager()
        try:
            user = await manager.get_user_from_token(token)
        except Exception:  # noqa: BLE001 (an expired or forged token is no user)
            return None
        if not manager.is_authorized_custom_view(method="GET", resource_name=AIRFLOW_RESOURCE,
                                                 user=user):
            raise Forbidden()
        admin = manager.is_authorized_configuration(method="GET", user=user)
        return User(user.get_name(), "admin" if admin else "labeller")

    def login_url(self, request: Request) -> str:
        if self.settings.auth == "airflow":
            from airflow.api_fastapi.app import get_auth_manager

            return get_auth_manager().get_url_login(next_url=str(request.url))
        return request.url_for("login_form").path
