"""atomic_write: whole-file replacement, the user's umask, and no debris when a write fails;
read_regular and read_json: only regular files, within a size and (JSON) a depth."""

import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from rnnlab import files
from rnnlab.errors import RnnlabError

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_mode_the_umask_allows(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "config.json"
    files.atomic_write(path, b"{}")
    assert mode(path) == expected


@posix_only
def test_a_replaced_file_also_gets_the_mode_the_umask_allows(tmp_path, umask):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    path.chmod(0o600)
    umask(0o022)
    files.atomic_write(path, b"new")
    assert mode(path) == 0o644


def test_an_existing_file_is_replaced_whole(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"a much longer old content than the new one\n" * 100)
    files.atomic_write(path, b"short")
    assert path.read_bytes() == b"short"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_missing_file_is_created(tmp_path):
    path = tmp_path / "vocab.json"
    files.atomic_write(path, b"[]")
    assert path.read_bytes() == b"[]"
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


def test_writes_to_the_same_path_in_turn_all_succeed(tmp_path):
    path = tmp_path / "perplexity.png"
    for i in range(20):
        files.atomic_write(path, str(i).encode())
    assert path.read_bytes() == b"19"
    assert [p.name for p in tmp_path.iterdir()] == ["perplexity.png"]


def _disk_full(*args):
    raise OSError(28, "No space left on device")


def _interrupted(*args):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "where, failure, error",
    [
        ("fsync", _disk_full, OSError),  # while the data is flushed to disk
        ("replace", _interrupted, KeyboardInterrupt),  # Ctrl-C just before the rename
    ],
)
def test_a_failed_write_leaves_the_old_contents_and_no_temporary_file(
    tmp_path, monkeypatch, where, failure, error
):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"old")
    monkeypatch.setattr(files.os, where, failure)
    with pytest.raises(error):
        files.atomic_write(path, b"new and longer")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "fsync", _disk_full)
    with pytest.raises(OSError):
        files.atomic_write(tmp_path / "new.txt", b"data")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bounded reading

ADVICE = "give the file the test meant"
fifos = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


@pytest.fixture
def deadline():
    """Fail a test that blocks (opening a named pipe, say) for 10 s rather than hang the run."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError("blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_message(info, *words):
    """One line, naming ``words``, ending with what to do."""
    message = str(info.value)
    assert "\n" not in message and message.endswith(f"; {ADVICE}"), message
    for word in words:
        assert word in message, (word, message)


def test_read_regular_returns_a_file_of_up_to_its_limit(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"0123456789")
    assert files.read_regular(path, 10, ADVICE) == b"0123456789"
    assert files.read_regular(path, 1000, ADVICE) == b"0123456789"


def test_read_regular_refuses_a_file_larger_than_its_limit(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"0123456789x")
    with pytest.raises(RnnlabError) as info:
        files.read_regular(path, 10, ADVICE)
    check_message(info, str(path), "is 11 bytes, more than the 10 bytes")


def test_read_regular_follows_a_link_to_a_regular_file(tmp_path):
    (tmp_path / "real.txt").write_bytes(b"text")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert files.read_regular(tmp_path / "link.txt", 10, ADVICE) == b"text"


def special_file(kind, tmp_path):
    """A path of ``kind``: a folder, a named pipe with no writer, or the endless /dev/zero."""
    if kind == "folder":
        (tmp_path / "config.json").mkdir()
        return tmp_path / "config.json"
    if kind == "named pipe":
        os.mkfifo(tmp_path / "config.json")
        return tmp_path / "config.json"
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    return Path("/dev/zero")


SPECIAL = [
    "folder",
    pytest.param("named pipe", marks=fifos),
    "character device",
]


@pytest.mark.parametrize("kind", SPECIAL)
def test_read_regular_refuses_what_is_not_a_regular_file_at_once(kind, tmp_path, deadline):
    path = special_file(kind, tmp_path)
    with pytest.raises(RnnlabError) as info:
        files.read_regular(path, 1 << 20, ADVICE)
    check_message(info, f"{path} is a {kind}, not a regular file")


@pytest.mark.parametrize("kind", SPECIAL)
def test_read_json_refuses_what_is_not_a_regular_file_at_once(kind, tmp_path, deadline):
    path = special_file(kind, tmp_path)
    with pytest.raises(RnnlabError) as info:
        files.read_json(path, ADVICE)
    check_message(info, f"{path} is a {kind}, not a regular file")


def test_a_missing_file_reaches_the_caller_as_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.read_regular(tmp_path / "missing.json", 100, ADVICE)
    with pytest.raises(FileNotFoundError):
        files.read_json(tmp_path / "missing.json", ADVICE)


def test_read_json_returns_the_parsed_value(tmp_path):
    path = tmp_path / "config.json"
    value = {"model": {"kind": "lstm", "hidden": [256, 256]}, "lr": 1.0, "seed": None}
    path.write_text(json.dumps(value))
    assert files.read_json(path, ADVICE) == value


@pytest.mark.parametrize(
    "data",
    [b'{"mode": "letters\xff"}', b'{"mode": "letters"', b"not json", b""],
    ids=["invalid UTF-8", "truncated", "not JSON", "empty"],
)
def test_read_json_refuses_what_is_not_json(data, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(data)
    with pytest.raises(RnnlabError) as info:
        files.read_json(path, ADVICE)
    check_message(info, str(path), "is not valid JSON")


def test_read_json_refuses_a_file_larger_than_its_limit(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(["a"] * 100))
    with pytest.raises(RnnlabError) as info:
        files.read_json(path, ADVICE, limit=100)
    check_message(info, str(path), "more than the 100 bytes")


def nested(depth, kind):
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


@pytest.mark.parametrize("kind", ["list", "object"])
def test_read_json_reads_nesting_up_to_its_limit(kind, tmp_path):
    path = tmp_path / "state.json"
    path.write_text(nested(files.JSON_DEPTH, kind))
    assert files.read_json(path, ADVICE) is not None
    path.write_text(nested(3, kind))
    assert files.read_json(path, ADVICE, max_depth=3) is not None


@pytest.mark.parametrize(
    "text",
    [
        nested(files.JSON_DEPTH + 1, "list"),
        nested(files.JSON_DEPTH + 1, "object"),
        nested(500, "list"),  # parses, then is measured
        "[" * 100_000,  # deeper than Python's parser recurses: RecursionError inside json
        nested(100_000, "object"),
    ],
    ids=["list one too deep", "object one too deep", "500 deep", "100000 [", "100000 {"],
)
def test_read_json_refuses_nesting_deeper_than_its_limit(text, tmp_path):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(RnnlabError) as info:
        files.read_json(path, ADVICE)
    check_message(info, str(path), "nests deeper than rnnlab's files ever do")
