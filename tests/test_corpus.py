"""Corpora: built-in names, downloads (with a fake fetch), and reading text files and folders."""
import hashlib
import io
import os
import re
import urllib.error
import zipfile
from pathlib import Path

import pytest

from rnnlab import corpus
from rnnlab.corpus import CorpusSpec
from rnnlab.errors import RnnlabError

SHARED = Path(os.environ.get("RNNLAB_DATA_DIR") or "/work/shared/data")
needs_data = pytest.mark.skipif(not (SHARED / "timemachine.txt").is_file(),
                                reason="verified corpora not found; set RNNLAB_DATA_DIR")

# The checksums listed in the README of the shared data folder.
DATA_SHA1 = {
    "timemachine.txt": "090b5e7e70c295757f55df93cb0a180b9691891a",
    "tinyshakespeare.txt": "04486597058d11dcc2c556b1d0433891eb639d2e",
    "ptb/train.txt": "f9ffb014fa33bd5730e5029697ad245184f3a678",
    "ptb/valid.txt": "d9f5fed6afa5e1b82cd1e3e5f5040f6852940228",
    "ptb/test.txt": "5c15c548b42d80bce9332b788514e6635fb0226e",
}


def sha1_file(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty RNNLAB_DATA_DIR and a fresh cache: built-in names must be downloaded."""
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "rnnlab"


def files_under(folder):
    """Every file below ``folder``, hidden temporary files included (relative paths)."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def fake_spec(monkeypatch, name, data, **changes):
    """Replace built-in ``name``'s spec by one whose checksum is that of ``data``."""
    old = corpus.CORPORA[name]
    spec = CorpusSpec(name, old.url, hashlib.sha1(data).hexdigest(),
                      changes.get("files", old.files), changes.get("zip_members", old.zip_members))
    monkeypatch.setitem(corpus.CORPORA, name, spec)
    return spec


def ptb_zip(texts):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ptb/", "")
        for split, text in texts.items():
            z.writestr(f"ptb/ptb.{split}.txt", text)
        z.writestr("ptb/README", "not a split")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Built-in names

@needs_data
@pytest.mark.parametrize("name,split,file", [
    ("timemachine", "train", "timemachine.txt"),
    ("tinyshakespeare", "train", "tinyshakespeare.txt"),
    ("ptb", "train", "ptb/train.txt"),
    ("ptb", "valid", "ptb/valid.txt"),
    ("ptb", "test", "ptb/test.txt"),
])
def test_builtin_names_resolve_through_rnnlab_data_dir(name, split, file, monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(SHARED))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url):
        raise AssertionError("a corpus in RNNLAB_DATA_DIR must not be downloaded")

    path = corpus.builtin_path(name, split, fetch=no_network)
    assert path == SHARED / file
    assert sha1_file(path) == DATA_SHA1[file]
    assert not (tmp_path / "cache").exists()


@needs_data
def test_data_readme_lists_the_checksums_the_tests_use():
    readme = SHARED / "README.md"
    if not readme.is_file():
        pytest.skip("no README beside the corpora")
    rows = re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{40}) \|", readme.read_text(), re.M)
    assert dict(rows) == DATA_SHA1


def test_single_file_specs_carry_the_readme_checksums():
    assert corpus.CORPORA["timemachine"].sha1 == DATA_SHA1["timemachine.txt"]
    assert corpus.CORPORA["tinyshakespeare"].sha1 == DATA_SHA1["tinyshakespeare.txt"]


def test_cache_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert corpus.cache_dir() == tmp_path / "rnnlab"


def test_a_cached_corpus_is_not_downloaded_again(offline, monkeypatch):
    (offline).mkdir(parents=True)
    (offline / "timemachine.txt").write_text("cached text\n")
    path = corpus.builtin_path("timemachine", fetch=lambda url: pytest.fail("fetched"))
    assert path == offline / "timemachine.txt"


def test_unknown_split_of_a_builtin_corpus_names_the_splits(offline):
    with pytest.raises(RnnlabError, match="no 'valid' split; it has: train"):
        corpus.builtin_path("timemachine", "valid", fetch=lambda url: b"")


def test_unknown_name_in_builtin_path_lists_the_known_ones():
    with pytest.raises(RnnlabError, match="timemachine, tinyshakespeare, ptb"):
        corpus.builtin_path("timemachin")


# ---------------------------------------------------------------------------
# Downloads, with a fake fetch

def test_download_writes_the_verified_file_atomically(offline, monkeypatch):
    data = b"The Time Traveller\n(for so it will be convenient)\n"
    spec = fake_spec(monkeypatch, "timemachine", data)
    seen = []

    def fetch(url):
        seen.append(url)
        # nothing may be written before the whole file has arrived and been checked
        assert not offline.exists() or files_under(offline) == []
        return data

    path = corpus.builtin_path("timemachine", fetch=fetch)
    assert seen == [spec.url]
    assert path == offline / "timemachine.txt"
    assert path.read_bytes() == data
    assert files_under(offline) == ["timemachine.txt"]  # no temporary file left behind
    assert corpus.read_text("timemachine") == data.decode()


def test_atomic_write_leaves_old_file_and_no_temp_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "corpus.txt"
    target.write_bytes(b"old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        corpus.atomic_write(target, b"new and longer")
    assert target.read_bytes() == b"old"
    assert files_under(tmp_path) == ["corpus.txt"]


def check_nothing_saved_and_hint(message, cache, spec):
    assert spec.url in message
    assert str(cache) in message and "RNNLAB_DATA_DIR" in message
    for file in spec.files.values():
        assert file in message
    assert not cache.exists() or files_under(cache) == []


def test_checksum_mismatch_saves_nothing_and_says_where_to_put_the_file(offline):
    spec = corpus.CORPORA["timemachine"]
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path("timemachine", fetch=lambda url: b"<html>captive portal</html>")
    message = str(info.value)
    assert "checksum mismatch" in message and spec.sha1 in message
    assert hashlib.sha1(b"<html>captive portal</html>").hexdigest() in message
    check_nothing_saved_and_hint(message, offline, spec)


@pytest.mark.parametrize("error", [
    OSError("connection reset"),
    urllib.error.URLError("name resolution failed"),
    TimeoutError("timed out"),
])
def test_failed_download_saves_nothing_and_says_where_to_put_the_file(offline, error):
    def fetch(url):
        raise error

    spec = corpus.CORPORA["tinyshakespeare"]
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path("tinyshakespeare", fetch=fetch)
    message = str(info.value)
    assert "could not download corpus 'tinyshakespeare'" in message
    assert str(error) in message or str(error.args[0]) in message
    check_nothing_saved_and_hint(message, offline, spec)


def test_ptb_zip_is_unpacked_into_train_valid_test(offline, monkeypatch):
    texts = {"train": " aer banknote \n no it was n't \n",
             "valid": " consumers may want \n",
             "test": " no it was n't black monday \n"}
    data = ptb_zip(texts)
    fake_spec(monkeypatch, "ptb", data)
    calls = []

    def fetch(url):
        calls.append(url)
        return data

    assert corpus.builtin_path("ptb", "valid", fetch=fetch) == offline / "ptb" / "valid.txt"
    assert files_under(offline) == ["ptb/test.txt", "ptb/train.txt", "ptb/valid.txt"]
    for split, text in texts.items():
        assert (offline / "ptb" / f"{split}.txt").read_text() == text
        assert corpus.read_text("ptb", split) == text
    assert len(calls) == 1  # the other splits came from the same download


def test_ptb_with_the_wrong_zip_saves_nothing(offline):
    data = ptb_zip({"train": "a\n", "valid": "b\n", "test": "c\n"})
    with pytest.raises(RnnlabError, match="checksum mismatch for 'ptb'"):
        corpus.builtin_path("ptb", "test", fetch=lambda url: data)
    assert not offline.exists() or files_under(offline) == []


# ---------------------------------------------------------------------------
# Reading paths

def test_utf8_bom_and_crlf_line_ends_are_normalised(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\rline three\n")
    assert corpus.read_text(str(path)) == "line one\nline two\nline three\n"


def test_non_ascii_text_is_read_as_utf8(tmp_path):
    path = tmp_path / "greek.txt"
    path.write_bytes("καλημέρα κόσμε 🙂\n".encode())
    assert corpus.read_text(str(path)) == "καλημέρα κόσμε 🙂\n"


def test_a_folder_of_txt_files_is_read_in_sorted_order(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / "c.txt").write_bytes(b"third\r\n")
    (folder / "notes.md").write_text("not text for training")
    (folder / "data.bin").write_bytes(b"\x00\x01")
    assert corpus.read_text(str(folder)) == "first\nsecond\nthird\n"


def test_a_user_path_has_no_other_splits(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("text")
    with pytest.raises(RnnlabError, match="only built-in corpora have a 'valid' split"):
        corpus.read_text(str(path), "valid")


def test_missing_path_says_so(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(RnnlabError, match="no such file or folder: .*nope.txt"):
        corpus.read_text(str(missing))


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  ", b"\xef\xbb\xbf"])
def test_empty_or_whitespace_only_file_says_it_is_empty(tmp_path, content):
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    with pytest.raises(RnnlabError, match="blank.txt is empty"):
        corpus.read_text(str(path))


def test_folder_without_txt_files_says_so(tmp_path):
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(RnnlabError, match="has no .txt files"):
        corpus.read_text(str(tmp_path))


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(b"PK\x03\x04abc\x00\x00def")
    with pytest.raises(RnnlabError, match=r"binary file \(it contains NUL bytes at offset 7\)"):
        corpus.read_text(str(path))


@pytest.mark.parametrize("data,offset,byte", [
    ("caf\u00e9".encode("latin-1") + b" au lait", 3, 0xE9),
    (b"\xef\xbb\xbf" + "ok ".encode() + b"\xff", 6, 0xFF),  # offset counts the BOM
    ("naïve ".encode() + b"\xc3", 7, 0xC3),  # truncated two-byte sequence at the end
])
def test_non_utf8_file_names_the_offset_of_the_first_bad_byte(tmp_path, data, offset, byte):
    path = tmp_path / "latin1.txt"
    path.write_bytes(data)
    with pytest.raises(RnnlabError) as info:
        corpus.read_text(str(path))
    message = str(info.value)
    assert f"invalid byte 0x{byte:02x} at byte offset {offset};" in message
    assert "latin1.txt is not UTF-8" in message and "convert it to UTF-8" in message
    with pytest.raises(UnicodeDecodeError) as python:
        data.decode("utf-8")
    assert python.value.start == offset  # Python's own decoder agrees


def test_unknown_corpus_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RnnlabError) as info:
        corpus.read_text("timemachin")
    message = str(info.value)
    assert "unknown corpus 'timemachin'" in message
    for name in corpus.CORPORA:
        assert name in message
