"""Files that are either wholly old or wholly new: write to a temporary file, flush, rename.

A reader (or a run killed at any moment) sees the previous contents or the new ones,
never a mix; used for downloaded corpora and for everything in a run directory.
New files get the mode ``0o666 & ~umask``, as ``open(path, "wb")`` would give them.

And files that are read with bounds: ``read_regular`` and ``read_json`` refuse a
folder, a named pipe or a device, read no more than a limit, and (JSON) refuse
nesting deeper than rnnlab ever writes, each with a one-line RnnlabError.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from .errors import RnnlabError

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


def silence(stream: Any) -> None:
    """Point a closed standard stream (a pipe whose reader left) at /dev/null, so that
    nothing written or flushed to it later fails."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a StringIO): nothing will be flushed to it


# ---------------------------------------------------------------- bounded reading

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
JSON_LIMIT = 64 * MIB  # no JSON file rnnlab writes comes near this
JSON_DEPTH = 32  # the deepest JSON rnnlab writes is 6 levels (a checkpoint's optimizer state)

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def size_text(n: int) -> str:
    """Bytes as messages show them: 1.5 GiB, 12.0 MiB, 800 bytes."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def read_regular(path: Path, limit: int, advice: str = "give a regular file") -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes.

    A folder, named pipe or device is an RnnlabError (the open does not wait on a pipe),
    and no more than ``limit`` + 1 bytes are ever read, however the file grows.
    ``advice`` ends each message. FileNotFoundError and other OSErrors of the open
    reach the caller, which knows what a missing file means.
    """
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RnnlabError(f"{path} is a {_kind(info.st_mode)}, not a regular file; {advice}")
        if info.st_size > limit:
            raise RnnlabError(
                f"{path} is {size_text(info.st_size)}, more than the {size_text(limit)} "
                f"rnnlab reads from such a file; {advice}"
            )
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, 16 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise RnnlabError(
                f"{path} grew past the {size_text(limit)} rnnlab reads from such a "
                f"file while it was read; {advice}"
            )
        return b"".join(chunks)
    finally:
        os.close(fd)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(data: bytes, path: Path, advice: str, max_depth: int = JSON_DEPTH) -> Any:
    """The JSON value in ``data`` (read from ``path``): strict UTF-8, at most ``max_depth`` deep.

    Text that only a lenient reader accepts (a lone surrogate such as "\\ud800", which
    could be read but never written back) is refused too, with an RnnlabError ending
    with ``advice``.
    """
    try:
        value = json.loads(data.decode("utf-8"))
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates fail here
    except (UnicodeError, ValueError):
        raise RnnlabError(f"{path} is not valid JSON (truncated or damaged); {advice}") from None
    except RecursionError:
        raise RnnlabError(f"{path} nests deeper than rnnlab's files ever do; {advice}") from None
    if _depth(value) > max_depth:
        raise RnnlabError(f"{path} nests deeper than rnnlab's files ever do; {advice}")
    return value


def read_json(path: Path, advice: str, limit: int = JSON_LIMIT, max_depth: int = JSON_DEPTH) -> Any:
    """The parsed JSON of a regular file of at most ``limit`` bytes, nested at most ``max_depth``.

    Anything else (not UTF-8, not JSON, too large, too deep, not a regular file) is an
    RnnlabError ending with ``advice``; FileNotFoundError reaches the caller.
    """
    return parse_json(read_regular(path, limit, advice), path, advice, max_depth)
