"""Files that are either wholly old or wholly new: write to a temporary file, flush, rename.

A reader (or a run killed at any moment) sees the previous contents or the new ones,
never a mix; used for downloaded corpora and for everything in a run directory.
New files get the mode ``0o666 & ~umask``, as ``open(path, "wb")`` would give them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# O_EXCL: never reuse a file someone else made; O_NOFOLLOW and O_CLOEXEC (where the
# platform has them): the flags tempfile.mkstemp uses, but mkstemp forces mode 0600.
_TMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_TMP_ATTEMPTS = 100


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temporary(path: Path):
    """(fd, name) of a new, empty file beside ``path``; the kernel applies the umask to 0o666."""
    for _ in range(_TMP_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _TMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a mix."""
    path = Path(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
