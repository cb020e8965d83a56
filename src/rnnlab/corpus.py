"""Corpora: turn a name or a path into text.

A built-in name (``timemachine``, ``tinyshakespeare``, ``ptb``) is read from the
copy shipped inside the package where there is one (The Time Machine and Tiny
Shakespeare, checked against their SHA-1 like a download), else looked up in
``$RNNLAB_DATA_DIR`` (``$RNNLM_DATA_DIR``, the old name, is read too), then in the
per-user cache, then downloaded, checked against its SHA-1 and written atomically
into the cache. Any other source is a path to a UTF-8 text file or to a folder of
``.txt`` files.
"""
from __future__ import annotations

import codecs
import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .errors import RnnlabError
from .files import atomic_write

D2L_DATA = "http://d2l-data.s3-accelerate.amazonaws.com/"
PACKAGED = Path(__file__).resolve().parent / "corpora"  # the corpora shipped as package data
DATA_DIR_VARIABLES = ("RNNLAB_DATA_DIR", "RNNLM_DATA_DIR")  # the second is the old name


@dataclass(frozen=True)
class CorpusSpec:
    """Where a built-in corpus comes from and what its files must hash to."""

    name: str
    url: str
    sha1: str  # of the downloaded file (the zip, for ptb)
    files: Dict[str, str]  # split -> file name inside the data folder
    zip_members: Optional[Dict[str, str]] = None  # split -> member of the zip
    packaged: bool = False  # shipped inside the package (under corpora/, named as in files)


CORPORA: Dict[str, CorpusSpec] = {
    "timemachine": CorpusSpec(
        "timemachine", D2L_DATA + "timemachine.txt",
        "090b5e7e70c295757f55df93cb0a180b9691891a",
        {"train": "timemachine.txt"}, packaged=True),
    "tinyshakespeare": CorpusSpec(
        "tinyshakespeare",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "04486597058d11dcc2c556b1d0433891eb639d2e",
        {"train": "tinyshakespeare.txt"}, packaged=True),
    "ptb": CorpusSpec(
        "ptb", D2L_DATA + "ptb.zip",
        "319d85e578af0cdc590547f26231e4e31cdf1e42",
        {"train": "ptb/train.txt", "valid": "ptb/valid.txt", "test": "ptb/test.txt"},
        {"train": "ptb/ptb.train.txt", "valid": "ptb/ptb.valid.txt", "test": "ptb/ptb.test.txt"}),
}


def cache_dir() -> Path:
    """The per-user cache folder for downloaded corpora."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnnlab"


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https/http URLs)
        return response.read()


def download(spec: CorpusSpec, root: Path, fetch=_fetch) -> None:
    """Download ``spec`` into ``root``, verify its checksum, and write its files atomically.

    Nothing is written unless the whole download arrived and its SHA-1 matches.
    """
    hint = (f"download it by hand from {spec.url} and put its files in "
            f"{root} (or in a folder named by RNNLAB_DATA_DIR): {', '.join(spec.files.values())}")
    try:
        data = fetch(spec.url)
    except Exception as e:  # network errors come in many types; all mean the same here
        raise RnnlabError(f"could not download corpus {spec.name!r} ({e}); {hint}") from None
    got = sha1_of(data)
    if got != spec.sha1:
        raise RnnlabError(f"checksum mismatch for {spec.name!r}: expected sha1 {spec.sha1}, "
                         f"got {got}; nothing was saved; {hint}")
    files = {spec.files["train"]: data}
    if spec.zip_members:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            files = {spec.files[split]: z.read(member) for split, member in spec.zip_members.items()}
    for name, contents in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(root / name, contents)


def data_dirs() -> List[Path]:
    """The folders named by $RNNLAB_DATA_DIR (or the old $RNNLM_DATA_DIR), then the cache."""
    named = [os.environ.get(name) for name in DATA_DIR_VARIABLES]
    return [Path(folder) for folder in named if folder] + [cache_dir()]


_verified_packaged: Dict[Path, bool] = {}  # packaged files whose SHA-1 was checked


def packaged_path(spec: CorpusSpec, packaged: Path = PACKAGED) -> Optional[Path]:
    """The verified copy of ``spec`` shipped in the package, or None if it has none."""
    if not spec.packaged:
        return None
    path = packaged / spec.files["train"]
    if not path.is_file():
        return None
    if path not in _verified_packaged:
        got = sha1_of(path.read_bytes())
        if got != spec.sha1:
            raise RnnlabError(f"the copy of {spec.name!r} shipped with rnnlab ({path}) is damaged: "
                              f"sha1 {got}, expected {spec.sha1}; reinstall rnnlab")
        _verified_packaged[path] = True
    return path


def builtin_path(name: str, split: str = "train", fetch=_fetch, packaged: Path = PACKAGED) -> Path:
    """The local file of split ``split`` of built-in corpus ``name``, downloading it if needed."""
    if name not in CORPORA:
        raise RnnlabError(f"unknown corpus {name!r}: known names are {', '.join(CORPORA)}")
    spec = CORPORA[name]
    if split not in spec.files:
        raise RnnlabError(f"corpus {name!r} has no {split!r} split; it has: {', '.join(spec.files)}")
    shipped = packaged_path(spec, packaged)
    if shipped is not None:
        return shipped
    for root in data_dirs():
        if (root / spec.files[split]).is_file():
            return root / spec.files[split]
    download(spec, cache_dir(), fetch=fetch)
    return cache_dir() / spec.files[split]


def decode_utf8(data: bytes, where: str) -> str:
    """Decode UTF-8 (dropping a BOM, turning CRLF and CR line ends into LF)."""
    if b"\x00" in data[:8192]:
        raise RnnlabError(f"{where} looks like a binary file (it contains NUL bytes at offset "
                         f"{data.index(0)}); give a UTF-8 text file")
    # Strip the BOM ourselves: the utf-8-sig codec reports error offsets counted after it.
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        raise RnnlabError(f"{where} is not UTF-8 text: invalid byte 0x{data[at]:02x} at byte "
                         f"offset {at}; convert it to UTF-8 (e.g. iconv -t UTF-8)") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RnnlabError(f"cannot read {path}: {e.strerror}") from None
    return decode_utf8(data, str(path))


def read_path(path: Path) -> str:
    """Read a UTF-8 text file, or every ``.txt`` file under a folder (sorted by path, joined by newlines)."""
    if not path.exists():
        raise RnnlabError(f"no such file or folder: {path}; give a built-in corpus name "
                         f"({', '.join(CORPORA)}) or the path of a UTF-8 text file")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise RnnlabError(f"folder {path} has no .txt files; put UTF-8 text files "
                             f"ending in .txt in it")
        text = "\n".join(_read_file(p) for p in files)  # an empty file among others is fine
    else:
        text = _read_file(path)
    if not text.strip():
        raise RnnlabError(f"{path} is empty (or only white space); give a file with some text")
    return text


def is_builtin(source: str) -> bool:
    return source in CORPORA


def read_text(source: str, split: str = "train") -> str:
    """The raw text of ``source``: a built-in corpus name or a path."""
    if is_builtin(source):
        return read_path(builtin_path(source, split))
    if split != "train":
        raise RnnlabError(f"only built-in corpora have a {split!r} split; {source!r} is a path")
    path = Path(source).expanduser()
    if not path.exists() and os.sep not in source and "." not in source:
        raise RnnlabError(f"unknown corpus {source!r}: known names are {', '.join(CORPORA)}, "
                         f"or give the path of a text file or folder")
    return read_path(path)
