"""Corpora: turn a name or a path into text.

A built-in name is found in the first of these places that has it:

1. the copy shipped inside the package (The Time Machine and Tiny Shakespeare),
   checked against its SHA-1 the first time the process reads it;
2. the data folder named by ``$RNNLAB_DATA_DIR`` (or, when that is unset, by
   ``$RNNLM_DATA_DIR``, the variable's name before the rename);
3. the per-user cache (``$XDG_CACHE_HOME/rnnlab``, else ``~/.cache/rnnlab``);
4. the network: downloaded, checked against its SHA-1 and written atomically into
   the cache (how ``ptb`` arrives the first time).

Any other source is a path to a UTF-8 text file or to a folder of ``.txt`` files.

Every file is read with a bound: it must be a regular file (a named pipe, a device
or a folder where a file belongs is an error, never a hang), a corpus is at most
CORPUS_LIMIT bytes (a folder's ``.txt`` files together) and a download at most
DOWNLOAD_LIMIT bytes.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import RnnlabError
from .files import GIB, MIB, atomic_write, read_regular, size_text

D2L_DATA = "http://d2l-data.s3-accelerate.amazonaws.com/"
PACKAGED = Path(__file__).resolve().parent / "corpora"  # the corpora shipped as package data
DATA_DIR_VARIABLES = ("RNNLAB_DATA_DIR", "RNNLM_DATA_DIR")  # the first one set is used

Fetch = Callable[[str], bytes]  # url -> the whole response body

# The most one corpus may hold, a file or a folder's .txt files together. A corpus is read
# whole and tokenized in memory, where each token costs a Python object: the largest texts
# character models are trained on (enwik9, 10^9 bytes) fit, while a bigger one would need
# tens of GiB once tokenized, so it is refused before it is read rather than killed later.
CORPUS_LIMIT = 2 * GIB
# The most one download may hold. Built-in corpora are fixed files with known checksums
# (the largest, ptb.zip, is a few MB); a response past this is not the file (a portal page
# or a wrong URL streaming without end), so reading stops instead of filling memory.
DOWNLOAD_LIMIT = 256 * MIB
USER_FILE_ADVICE = (
    "give a regular UTF-8 text file or a folder of .txt files (save piped text to a file first)"
)


@dataclass(frozen=True)
class CorpusSpec:
    """Where a built-in corpus comes from and what its files must hash to."""

    name: str
    url: str
    sha1: str  # of the downloaded file (the zip, for ptb)
    files: dict[str, str]  # split -> file name inside the data folder
    zip_members: dict[str, str] | None = None  # split -> member of the zip
    # One-file corpora only: shipped inside the package as corpora/<files["train"]>.
    packaged: bool = False


CORPORA: dict[str, CorpusSpec] = {
    "timemachine": CorpusSpec(
        "timemachine",
        D2L_DATA + "timemachine.txt",
        "090b5e7e70c295757f55df93cb0a180b9691891a",
        {"train": "timemachine.txt"},
        packaged=True,
    ),
    "tinyshakespeare": CorpusSpec(
        "tinyshakespeare",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "04486597058d11dcc2c556b1d0433891eb639d2e",
        {"train": "tinyshakespeare.txt"},
        packaged=True,
    ),
    "ptb": CorpusSpec(
        "ptb",
        D2L_DATA + "ptb.zip",
        "319d85e578af0cdc590547f26231e4e31cdf1e42",
        {"train": "ptb/train.txt", "valid": "ptb/valid.txt", "test": "ptb/test.txt"},
        {"train": "ptb/ptb.train.txt", "valid": "ptb/ptb.valid.txt", "test": "ptb/ptb.test.txt"},
    ),
}


def cache_dir() -> Path:
    """The per-user cache folder for downloaded corpora."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnlab"


def sha1_of(data: bytes) -> str:
    """The SHA-1 of ``data`` as 40 hex digits (how the corpora's checksums are written)."""
    return hashlib.sha1(data).hexdigest()


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    # urlopen with a fixed URL from CORPORA, never one a user typed
    chunks, total = [], 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        while total <= DOWNLOAD_LIMIT:
            chunk = response.read(min(DOWNLOAD_LIMIT + 1 - total, 16 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    if total > DOWNLOAD_LIMIT:
        raise RnnlabError(f"the response is larger than {size_text(DOWNLOAD_LIMIT)}")
    return b"".join(chunks)


def _os_error(e: OSError) -> str:
    """What an OSError says, with the file it names, for a one-line message."""
    what = e.strerror or str(e)
    return f"{what}: {e.filename}" if e.filename else what


def download(spec: CorpusSpec, root: Path, fetch: Fetch = _fetch) -> None:
    """Download ``spec`` into ``root``, verify its checksum, and write its files atomically.

    Nothing is written unless the whole download arrived, is at most DOWNLOAD_LIMIT
    bytes and its SHA-1 matches; each file written is whole (``atomic_write``), and a
    failed write (disk full, a file or an unwritable folder in the way) is an RnnlabError.
    """
    hint = (
        f"download it by hand from {spec.url} and put its files in "
        f"{root} (or in a folder named by RNNLAB_DATA_DIR): {', '.join(spec.files.values())}"
    )
    try:
        data = fetch(spec.url)
    except Exception as e:  # noqa: BLE001 (network errors come in many types; all mean the same)
        raise RnnlabError(f"could not download corpus {spec.name!r} ({e}); {hint}") from None
    if len(data) > DOWNLOAD_LIMIT:
        raise RnnlabError(
            f"the download of corpus {spec.name!r} is larger than {size_text(DOWNLOAD_LIMIT)}, "
            f"so it is not the expected file; nothing was saved; {hint}"
        )
    got = sha1_of(data)
    if got != spec.sha1:
        raise RnnlabError(
            f"checksum mismatch for {spec.name!r}: expected sha1 {spec.sha1}, "
            f"got {got}; nothing was saved; {hint}"
        )
    files = {spec.files["train"]: data}
    if spec.zip_members:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            files = {
                spec.files[split]: z.read(member) for split, member in spec.zip_members.items()
            }
    try:
        for name, contents in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(root / name, contents)
    except OSError as e:
        raise RnnlabError(
            f"could not save corpus {spec.name!r} in {root} ({_os_error(e)}); free some space "
            f"or make {root} a writable folder (or set XDG_CACHE_HOME), or set RNNLAB_DATA_DIR "
            f"to a folder holding {', '.join(spec.files.values())} from {spec.url}"
        ) from None


def data_dirs() -> list[Path]:
    """Where to look for a corpus before downloading it: the data folder, then the cache.

    The data folder is $RNNLAB_DATA_DIR, or $RNNLM_DATA_DIR (the old name) when
    RNNLAB_DATA_DIR is unset or empty.
    """
    named = next((os.environ[name] for name in DATA_DIR_VARIABLES if os.environ.get(name)), None)
    return ([Path(named)] if named else []) + [cache_dir()]


_verified_packaged: set[Path] = set()  # packaged files whose SHA-1 this process has checked


def packaged_path(spec: CorpusSpec, packaged: Path = PACKAGED) -> Path | None:
    """The verified copy of ``spec`` in the folder ``packaged``, or None if it has none there.

    A copy whose SHA-1 is wrong is an error, not a reason to look elsewhere: the
    installation is damaged and reinstalling mends it.
    """
    if not spec.packaged:
        return None
    path = packaged / spec.files["train"]
    if not path.is_file():
        return None
    if path not in _verified_packaged:
        reinstall = "reinstall rnnlab (pip install --force-reinstall rnnlab)"
        try:
            data = read_regular(path, CORPUS_LIMIT, reinstall)
        except OSError as e:
            raise RnnlabError(f"cannot read {path} ({_os_error(e)}); {reinstall}") from None
        got = sha1_of(data)
        if got != spec.sha1:
            raise RnnlabError(
                f"the copy of {spec.name!r} shipped with rnnlab ({path}) is damaged: "
                f"sha1 {got}, expected {spec.sha1}; reinstall rnnlab "
                f"(pip install --force-reinstall rnnlab)"
            )
        _verified_packaged.add(path)
    return path


def builtin_path(
    name: str, split: str = "train", fetch: Fetch = _fetch, packaged: Path = PACKAGED
) -> Path:
    """The local file of split ``split`` of built-in corpus ``name``, downloading it if needed.

    Looks in the package (``packaged``), the data folder and the cache, in that order;
    ``fetch`` (url -> bytes) is what downloads. Whatever is found under the corpus's
    file name is returned, so that reading it says so if it is not a regular file
    (rather than downloading past it).
    """
    if name not in CORPORA:
        raise RnnlabError(f"unknown corpus {name!r}: known names are {', '.join(CORPORA)}")
    spec = CORPORA[name]
    if split not in spec.files:
        raise RnnlabError(
            f"corpus {name!r} has no {split!r} split; it has: {', '.join(spec.files)}"
        )
    shipped = packaged_path(spec, packaged)
    if shipped is not None:
        return shipped
    for root in data_dirs():
        if (root / spec.files[split]).exists():
            return root / spec.files[split]
    download(spec, cache_dir(), fetch=fetch)
    return cache_dir() / spec.files[split]


# Byte-order marks of the encodings that are not UTF-8 but often hold text (UTF-32's first:
# its little-endian mark begins with UTF-16's), with the name iconv knows each by.
OTHER_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32", "little-endian"),
    (codecs.BOM_UTF32_BE, "UTF-32", "big-endian"),
    (codecs.BOM_UTF16_LE, "UTF-16", "little-endian"),
    (codecs.BOM_UTF16_BE, "UTF-16", "big-endian"),
)


def _other_encoding(data: bytes) -> tuple[str, str, str] | None:
    """(encoding, its iconv name, what gave it away) of text that is UTF-16 or UTF-32, not
    UTF-8; else None.

    A byte-order mark says so; without one, UTF-16 of mostly Latin text has a NUL in every
    other byte (all at even offsets: big-endian; odd: little-endian).
    """
    for bom, name, order in OTHER_BOMS:
        if data.startswith(bom):
            return name, name, f"{order}, with a byte-order mark"
    head = data[: min(len(data), 8192) // 2 * 2]
    if len(head) >= 8:
        even, odd = head[0::2], head[1::2]
        for nuls, others, order in ((odd, even, "LE"), (even, odd, "BE")):
            if nuls.count(0) >= 0.9 * len(nuls) and others.count(0) == 0:
                endian = "little-endian" if order == "LE" else "big-endian"
                return "UTF-16", f"UTF-16{order}", f"{endian}, no byte-order mark"
    return None


def decode_utf8(data: bytes, where: str) -> str:
    """Decode UTF-8 (dropping a BOM, turning CRLF and CR line ends into LF).

    UTF-16 and UTF-32 text (with a byte-order mark, or UTF-16 with a NUL every other
    byte) and other bytes with NULs are an RnnlabError that says what the file is.
    """
    other = _other_encoding(data)
    if other is not None:
        name, iconv_name, how = other
        source = "FILE" if where.startswith("<") else where
        raise RnnlabError(
            f"{where} is {name} text ({how}), not UTF-8; convert it: "
            f"iconv -f {iconv_name} -t UTF-8 {source} > converted.txt"
        )
    if b"\x00" in data[:8192]:
        raise RnnlabError(
            f"{where} looks like a binary file (it contains NUL bytes at offset "
            f"{data.index(0)}); give a UTF-8 text file"
        )
    # Strip the BOM ourselves: the utf-8-sig codec reports error offsets counted after it.
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        raise RnnlabError(
            f"{where} is not UTF-8 text: invalid byte 0x{data[at]:02x} at byte "
            f"offset {at}; convert it to UTF-8 (e.g. iconv -t UTF-8)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_bytes(path: Path, advice: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit``; ``advice`` ends an error."""
    try:
        return read_regular(path, limit, advice)
    except OSError as e:
        raise RnnlabError(f"cannot read {path}: {e.strerror or e}; {advice}") from None


def _read_file(path: Path, advice: str) -> str:
    """The text of the regular file ``path``, of at most CORPUS_LIMIT bytes."""
    return decode_utf8(_read_bytes(path, advice, CORPUS_LIMIT), str(path))


def _read_folder(folder: Path) -> str:
    """The ``.txt`` files under ``folder`` (sorted, joined by newlines), CORPUS_LIMIT in all."""
    try:
        # Folders named *.txt are searched, not read; dangling links (an editor's lock
        # files are some) are skipped; anything else must read as a regular file.
        files = sorted(p for p in folder.rglob("*.txt") if p.exists() and not p.is_dir())
    except OSError as e:
        raise RnnlabError(f"cannot list folder {folder}: {_os_error(e)}") from None
    if not files:
        raise RnnlabError(
            f"folder {folder} has no .txt files; put UTF-8 text files ending in .txt in it"
        )
    texts, total = [], 0
    for p in files:
        advice = f"remove it from {folder}, or rename it so that its name does not end in .txt"
        try:
            size = p.stat().st_size
        except OSError as e:
            raise RnnlabError(f"cannot read {p}: {e.strerror or e}; {advice}") from None
        if total + size > CORPUS_LIMIT:
            raise RnnlabError(
                f"the .txt files under {folder} come to more than {size_text(CORPUS_LIMIT)}, "
                f"the most rnnlab reads as one corpus (passed at {p}); give a smaller folder"
            )
        data = _read_bytes(p, advice, CORPUS_LIMIT - total)
        total += len(data)
        texts.append(decode_utf8(data, str(p)))
    return "\n".join(texts)  # an empty file among others is fine


def _not_blank(text: str, path: Path) -> str:
    if not text.strip():
        raise RnnlabError(f"{path} is empty (or only white space); give a file with some text")
    return text


def read_path(path: Path) -> str:
    """Read a UTF-8 text file, or all ``.txt`` files under a folder (sorted, joined by newlines).

    At most CORPUS_LIMIT bytes in all; a named pipe or a device is an error, not a hang.
    """
    try:
        exists, is_folder = path.exists(), path.is_dir()
    except OSError as e:
        raise RnnlabError(f"cannot read {path}: {e.strerror or e}; {USER_FILE_ADVICE}") from None
    if not exists:
        raise RnnlabError(
            f"no such file or folder: {path}; give a built-in corpus name "
            f"({', '.join(CORPORA)}) or the path of a UTF-8 text file"
        )
    text = _read_folder(path) if is_folder else _read_file(path, USER_FILE_ADVICE)
    return _not_blank(text, path)


def is_builtin(source: str) -> bool:
    """Whether ``source`` names a built-in corpus rather than a path."""
    return source in CORPORA


def read_text(source: str, split: str = "train") -> str:
    """The raw text of ``source``: a built-in corpus name or a path.

    An empty or blank source is refused (as a path it would mean the current folder).
    """
    if not source.strip():
        raise RnnlabError(
            f"the corpus source {source!r} is {'only white space' if source else 'empty'}; give "
            f"a built-in corpus name ({', '.join(CORPORA)}) or the path of a text file or "
            f"folder ('.' for this folder)"
        )
    if is_builtin(source):
        path = builtin_path(source, split)
        advice = (
            f"remove it (rnnlab then looks in the next place or downloads {source!r} again) "
            f"or put the corpus file there (from {CORPORA[source].url})"
        )
        return _not_blank(_read_file(path, advice), path)
    if split != "train":
        raise RnnlabError(f"only built-in corpora have a {split!r} split; {source!r} is a path")
    try:
        path = Path(source).expanduser()
        exists = path.exists()
    except (OSError, RuntimeError) as e:  # RuntimeError: "~someone" with no such user
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RnnlabError(f"cannot read {source!r}: {detail}; {USER_FILE_ADVICE}") from None
    if not exists and os.sep not in source and "." not in source:
        raise RnnlabError(
            f"unknown corpus {source!r}: known names are {', '.join(CORPORA)}, "
            f"or give the path of a text file or folder"
        )
    return read_path(path)
