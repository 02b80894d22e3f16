"""Writing files that hold secrets: owner-only from the first byte, never half-written."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

__all__ = ["ensure_private_dir", "write_private"]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it owner-only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically.

    The bytes go to a temporary file created 0600 in the same folder, are flushed
    to disk, and then renamed over ``path``; a crash leaves either the old file or
    the new one, never a truncated key.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        OSError: the folder is not writable, the disk is full, ...
    """
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target appeared meanwhile: no silent overwrite.
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def resolve_home(
    arg: str | os.PathLike[str] | None, env: Mapping[str, str], variable: str, app: str
) -> Path:
    """A home folder: the command's ``--home`` first, then the environment
    ``variable``, then the user data folder named ``app``."""
    if arg is not None and str(arg) != "":
        return Path(arg).expanduser().absolute()
    if env.get(variable):
        return Path(env[variable]).expanduser().absolute()
    return Path(platformdirs.user_data_dir(app, appauthor=False))
