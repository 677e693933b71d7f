"""Checks of user input and environment that end in one line (:class:`UserError`), not later in
a traceback: the ``model`` of a space, and directories the CLI writes into.

    check_model("FacebookAI/xlm-roberta-large")   # a hub id: checked for form only (offline)
    check_model("/models/xlmr")                    # a local path: must hold config.json
    writable_dir(Path("report"), "--out")          # created if missing, probed for writing
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raystilts.core.errors import UserError

__all__ = [
    "ENVIRONMENT_ERRNOS",
    "check_model",
    "environment_error",
    "output_dir",
    "readable_dir",
    "writable_dir",
]

# OS errors that say the machine, not the program, is in the way: the CLI prints one line
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EMFILE}
)
_ENVIRONMENT_FIX = {
    errno.ENOSPC: "free some space (or point --workdir/--cache-dir elsewhere)",
    errno.EDQUOT: "free some space within your quota (or point --workdir/--cache-dir elsewhere)",
    errno.EACCES: "fix its permissions or use another directory",
    errno.EPERM: "fix its permissions or use another directory",
    errno.EROFS: "use a directory on a writable disk",
    errno.EMFILE: "raise the open-file limit (ulimit -n 4096)",
}

# The Hugging Face hub's repo id form: an optional owner, a name; letters, digits, - _ .; no
# "--" or ".." and no leading or trailing - or . (huggingface_hub's validate_repo_id rules).
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")
_FIX = "give a local directory holding config.json (a saved model) or a hub id like FacebookAI/xlm-roberta-base"


def _looks_like_path(model: str) -> bool:
    """A path by its form: absolute, ./ ../ ~, or more than one '/' (a hub id has one at most)."""
    return model.startswith(("/", "./", "../", "~", ".\\")) or model.count("/") > 1


def check_model(model: str) -> None:
    """Raise :class:`UserError` unless ``model`` is ``embedded``, a local model directory, or a
    well-formed hub id. A name that exists on disk is a path (as transformers reads it).

    >>> check_model("embedded"); check_model("FacebookAI/xlm-roberta-large")
    >>> check_model("/nonexistent/model")
    Traceback (most recent call last):
    raystilts.core.errors.UserError: model: /nonexistent/model does not exist; give a local directory holding config.json (a saved model) or a hub id like FacebookAI/xlm-roberta-base
    """
    if model == "embedded":
        return
    path = Path(model).expanduser()
    if path.exists() or _looks_like_path(model):
        if not path.exists():
            raise UserError(f"model: {model} does not exist; {_FIX}")
        if not path.is_dir():
            raise UserError(f"model: {model} is a file, not a model directory; {_FIX}")
        if not (path / "config.json").is_file():
            raise UserError(f"model: {model} has no config.json; {_FIX}")
        if not os.access(path / "config.json", os.R_OK):
            raise UserError(f"model: {model}/config.json is not readable; fix its permissions")
        return
    if not _HUB_ID.match(model) or "--" in model or ".." in model:
        raise UserError(f"model: {model!r} is neither a local directory nor a hub id; {_FIX}")


def writable_dir(path: Path, flag: str) -> Path:
    """``path`` as a directory we can write into (created if missing), or one line saying why
    not: a file in the way, no permission, a read-only or full disk."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a directory (created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError(
            f"{flag} {path}: cannot write there ({e.strerror or e}); give a directory you can "
            "write to"
        ) from None
    return path


@contextmanager
def output_dir(path: Path, flag: str) -> Iterator[Path]:
    """:func:`writable_dir` for a command's output: the directories it had to create are
    removed again (with what the command wrote there) when the command fails, so that a
    failed ``report --out DIR`` leaves no empty ``DIR`` behind. A directory that existed is
    never removed."""
    first_new = next((p for p in (path, *path.parents)[::-1] if not p.exists()), None)
    try:
        yield writable_dir(path, flag)
    except BaseException:
        if first_new is not None and first_new.is_dir():
            shutil.rmtree(first_new, ignore_errors=True)
        raise


def readable_dir(path: Path, flag: str) -> Path:
    """``path`` as an existing directory we can list, or one line saying why not."""
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise UserError(f"{flag} {path} {what}; give a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not readable; fix its permissions")
    return path


def environment_error(e: OSError) -> str:
    """One line for an OS error the environment caused (see ``ENVIRONMENT_ERRNOS``).

    >>> environment_error(OSError(errno.ENOSPC, "No space left on device", "/data/x"))
    '/data/x: No space left on device; free some space (or point --workdir/--cache-dir elsewhere)'
    """
    where = f"{e.filename}: " if e.filename else ""
    fix = _ENVIRONMENT_FIX.get(e.errno or 0, "fix the environment and try again")
    return f"{where}{e.strerror or e}; {fix}"
