"""atomic_write: whole-file replacement, the user's umask, and no debris when a write fails."""

import os
import stat
import sys

import pytest

from rnnlab import files

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
