"""Files that are either wholly old or wholly new: write to a temporary file, flush, rename.

A reader (or a run killed at any moment) sees the previous contents or the new ones,
never a mix; used for downloaded corpora, for everything in a run directory and for the
files a user names (``export --out``, ``inspect --html``, ``bench --out``). Several files
that belong together (a model and its vocabulary) are renamed only once all are whole.
New files get the mode ``0o666 & ~umask``, as ``open(path, "wb")`` would give them.

Only a regular file is ever replaced: a device (``/dev/null``), a named pipe, a socket or
a folder where a file is to go is refused (NotRegularFile, an OSError that each writer
reports in its own words) before anything is written. A symbolic link is replaced as an
entry of its folder, except where the caller follows links (the files a user names): then
the regular file it leads to is written.

And files that are read with bounds: ``read_regular`` and ``read_json`` refuse a
folder, a named pipe or a device, read no more than a limit, and (JSON) refuse
nesting deeper than rnnlab ever writes, each with a one-line RnnlabError.
"""

from __future__ import annotations

import errno
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


class NotRegularFile(OSError):
    """A write would replace something that is not a regular file (``strerror`` says what
    is there; ``filename`` where): an OSError, so that each writer's own message for a
    failed write (what is kept, what to do) reports it."""


def write_target(path: Path, follow_links: bool = False) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself or, with ``follow_links``, the
    regular file its symbolic link leads to.

    An existing ``path`` (or link target) that is not a regular file is NotRegularFile:
    replacing a device, a named pipe, a socket or a folder would destroy something that
    is not rnnlab's to write.
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except OSError:
        return path  # nothing there (or no way to look): the write itself will say
    if stat.S_ISLNK(info.st_mode):
        if not follow_links:
            return path  # the link, an entry of rnnlab's own folder, is replaced
        try:
            info = os.stat(path)
        except OSError:
            raise NotRegularFile(
                errno.ENOENT, "a symbolic link that leads to no file is there", str(path)
            ) from None
        if stat.S_ISREG(info.st_mode):
            return Path(os.path.realpath(path))
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(
            errno.EEXIST, f"a {_kind(info.st_mode)} is there, not a regular file", str(path)
        )
    return path


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, a ``path`` given as ``option`` that a write would not
    replace (see :func:`write_target`; links are followed): an RnnlabError."""
    try:
        write_target(path, follow_links=True)
    except NotRegularFile as e:
        raise RnnlabError(
            f"{option} {path}: {e.strerror}, and rnnlab replaces only regular files; give "
            f"the path of a new or regular file"
        ) from None


def _write_temporary(path: Path, data: bytes) -> Path:
    """A new temporary file beside ``path`` holding ``data``, flushed to disk."""
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: Path, data: bytes, follow_links: bool = False) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a mix.

    ``follow_links``: see :func:`write_target`; an existing non-regular file is refused.
    """
    atomic_write_all([(Path(path), data)], follow_links)


def atomic_write_all(blobs: list[tuple[Path, bytes]], follow_links: bool = False) -> None:
    """Write each ``(path, data)`` of ``blobs`` as :func:`atomic_write` does, as one unit:
    every file is written whole to a temporary file first, and the files are renamed into
    place only then; if a rename fails, the files already renamed get their previous
    contents back (or are removed, where there were none), so the set stays as it was.
    """
    targets = [write_target(path, follow_links) for path, _ in blobs]
    temporaries: list[Path] = []
    try:
        for target, (_, data) in zip(targets, blobs):
            temporaries.append(_write_temporary(target, data))
        _rename_all(temporaries, targets)
    finally:
        for tmp in temporaries:
            _unlink_quietly(tmp)  # only those that were not renamed are still there
    for folder in dict.fromkeys(target.parent for target in targets):
        fsync_dir(folder)


def _rename_all(temporaries: list[Path], targets: list[Path]) -> None:
    """Rename each temporary file over its target, all or none.

    The previous file of each target is kept under a second name (a hard link) until
    every rename is done. Where the system won't link it (a file system without hard
    links, an immutable file), that one file cannot be put back; an immutable file also
    refuses the rename, which then undoes the renames before it.
    """
    backups: list[Path | None] = []
    try:
        for target in targets:
            backups.append(_hard_link_beside(target))
        done = 0
        try:
            for tmp, target in zip(temporaries, targets):
                os.replace(tmp, target)
                done += 1
        except BaseException:
            for target, backup in list(zip(targets, backups))[:done]:
                try:
                    if backup is None:
                        os.unlink(target)
                    else:
                        os.replace(backup, target)
                except OSError:
                    pass
            raise
    finally:
        for backup in backups:
            if backup is not None:
                _unlink_quietly(backup)


def _hard_link_beside(target: Path) -> Path | None:
    """A second name beside ``target`` for the file it is now (None: there is no file, or
    the system would not link it)."""
    if not os.path.lexists(target):
        return None
    for _ in range(_TMP_ATTEMPTS):
        backup = target.parent / f".{target.name}.{secrets.token_hex(6)}.old"
        try:
            os.link(target, backup, follow_symlinks=False)
            return backup
        except FileExistsError:
            continue
        except OSError:
            return None
    raise FileExistsError(f"could not create a temporary name beside {target}")


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
