"""An earlier revision of this repository, checked out beside it for a before/after run."""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def is_revision(rev: str) -> bool:
    """Whether ``rev`` names a commit of this repository."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet",
                           f"{rev}^{{commit}}"], check=False, capture_output=True).returncode == 0


@contextlib.contextmanager
def worktree(rev: str):
    """A checkout of ``rev`` in a temporary git worktree (its path), removed after."""
    with tempfile.TemporaryDirectory(prefix="prodcat-rev-") as tmp:
        target = Path(tmp) / "checkout"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                        str(target), rev], check=True, capture_output=True)
        try:
            yield target
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(target)], check=False, capture_output=True)
