"""The UI's own users (``PRODCAT_UI_AUTH=local``): a JSON file of scrypt-hashed passwords.

    python -m webui.users add NAME --role labeller|admin   (the password from a prompt,
                                                            or one line of stdin)
    python -m webui.users remove NAME
    python -m webui.users list

The file maps each name to ``{"role", "password"}``, the password as
``scrypt$n$r$p$salt$hash`` (``hashlib.scrypt``, a random 16-byte salt). It is written
atomically with mode 0600. Roles: ``labeller`` (the queue, the bulk view, products)
and ``admin`` (everything, runs included).
"""
from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from pathlib import Path

ROLES = ("labeller", "admin")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 8
_N, _R, _P = 2**14, 8, 1


class UserError(ValueError):
    """A user name, role, password or users file that cannot be used."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load(path: Path) -> dict[str, dict]:
    """``{name: {"role", "password"}}``; an absent file is no users."""
    try:
        users = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise UserError(f"the users file {path} cannot be read: {err}") from None
    if not isinstance(users, dict) or not all(
            isinstance(u, dict) and u.get("role") in ROLES and isinstance(u.get("password"), str)
            for u in users.values()):
        raise UserError(f"the users file {path} is not a map of name to role and password")
    return users


def _save(path: Path, users: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(path.name + ".tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(users, handle, indent=1, sort_keys=True)
    os.replace(aside, path)


def add(path: Path, name: str, role: str, password: str) -> None:
    """Add a user, or set an existing one's role and password."""
    if not NAME_PATTERN.fullmatch(name):
        raise UserError("a user name is 1-64 letters, digits, '_', '.', '@' or '-', "
                        "starting with a letter or digit")
    if role not in ROLES:
        raise UserError(f"the role must be one of {ROLES}, not {role!r}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    users = load(path)
    users[name] = {"role": role, "password": hash_password(password)}
    _save(path, users)


def remove(path: Path, name: str) -> None:
    users = load(path)
    if users.pop(name, None) is None:
        raise UserError(f"no user {name!r}")
    _save(path, users)


def authenticate(path: Path, name: str, password: str) -> str | None:
    """The user's role if the password is right, else None (same work either way)."""
    user = load(path).get(name)
    stored = user["password"] if user else hash_password(secrets.token_hex(8))
    if verify_password(password, stored) and user:
        return user["role"]
    return None


def main(argv=None) -> None:
    from webui.settings import UiSettings

    parser = argparse.ArgumentParser(prog="python -m webui.users", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="add a user or change one's role and password")
    adding.add_argument("name")
    adding.add_argument("--role", choices=ROLES, default="labeller")
    commands.add_parser("remove", help="remove a user").add_argument("name")
    commands.add_parser("list", help="list the users and their roles")
    args = parser.parse_args(argv)
    path = UiSettings.from_env().users_file
    try:
        if args.command == "add":
            if sys.stdin.isatty():
                password = getpass.getpass(f"password for {args.name}: ")
            else:
                password = sys.stdin.readline().rstrip("\n")
            add(path, args.name, args.role, password)
            print(f"{args.name} ({args.role}) saved in {path}")
        elif args.command == "remove":
            remove(path, args.name)
            print(f"{args.name} removed from {path}")
        else:
            for name, user in sorted(load(path).items()):
                print(f"{name}\t{user['role']}")
    except UserError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
