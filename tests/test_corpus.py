"""Corpora: built-in names (shipped, in the data folder, cached or downloaded with a fake
fetch), and reading text files and folders."""

import dataclasses
import hashlib
import io
import json
import os
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import DATA_DIR
from rnnlab import corpus
from rnnlab.errors import RnnlabError

# The checksums listed in the README of the shared data folder.
DATA_SHA1 = {
    "timemachine.txt": "090b5e7e70c295757f55df93cb0a180b9691891a",
    "tinyshakespeare.txt": "04486597058d11dcc2c556b1d0433891eb639d2e",
    "ptb/train.txt": "f9ffb014fa33bd5730e5029697ad245184f3a678",
    "ptb/valid.txt": "d9f5fed6afa5e1b82cd1e3e5f5040f6852940228",
    "ptb/test.txt": "5c15c548b42d80bce9332b788514e6635fb0226e",
}
needs_data = pytest.mark.skipif(
    not all((DATA_DIR / file).is_file() for file in DATA_SHA1),
    reason=f"verified corpora not found in {DATA_DIR}; set RNNLAB_DATA_DIR",
)


def sha1_file(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def no_network(url):
    raise AssertionError(f"nothing may be downloaded here, but {url} was fetched")


@pytest.fixture
def no_data_dir_variables(monkeypatch):
    """Neither RNNLAB_DATA_DIR nor its old name RNNLM_DATA_DIR is set."""
    for variable in corpus.DATA_DIR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def offline(tmp_path, monkeypatch, no_data_dir_variables):
    """An empty RNNLAB_DATA_DIR and a fresh cache: built-in names must be downloaded."""
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "rnnlab"


@pytest.fixture
def not_packaged(tmp_path):
    """An empty folder to pass as ``packaged=``: no corpus is found shipped in the package."""
    folder = tmp_path / "no-package-data"
    folder.mkdir()
    return folder


def files_under(folder):
    """Every file below ``folder``, hidden temporary files included (relative paths)."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def fake_spec(monkeypatch, name, data):
    """Replace built-in ``name``'s spec by one whose checksum is that of ``data``."""
    spec = dataclasses.replace(corpus.CORPORA[name], sha1=hashlib.sha1(data).hexdigest())
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


def data_folder(root, files):
    """A data folder under ``root`` holding ``files`` (relative path -> text)."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# ---------------------------------------------------------------------------
# Built-in names shipped in the package


@pytest.mark.parametrize("name", ["timemachine", "tinyshakespeare"])
def test_shipped_corpora_are_read_with_no_data_folder_cache_or_network(
    name, tmp_path, monkeypatch, no_data_dir_variables
):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)  # what read_text's fetch calls
    assert corpus.builtin_path(name, fetch=no_network) == corpus.PACKAGED / f"{name}.txt"
    text = corpus.read_text(name)
    assert hashlib.sha1(text.encode("utf-8")).hexdigest() == DATA_SHA1[f"{name}.txt"]
    assert files_under(cache) == []


def test_the_shipped_copy_is_read_before_the_data_folder(tmp_path, monkeypatch):
    other = data_folder(tmp_path / "data", {"timemachine.txt": "another book\n"})
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(other))
    path = corpus.builtin_path("timemachine", fetch=no_network)
    assert path == corpus.PACKAGED / "timemachine.txt"
    assert sha1_file(path) == DATA_SHA1["timemachine.txt"]


def test_a_damaged_shipped_copy_is_a_one_line_error_saying_reinstall(tmp_path, offline):
    package = data_folder(tmp_path / "package", {"timemachine.txt": "The Time Machine, abridged\n"})
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path("timemachine", fetch=no_network, packaged=package)
    message = str(info.value)
    assert "\n" not in message
    assert "damaged" in message and "reinstall rnnlab" in message
    assert str(package / "timemachine.txt") in message
    assert corpus.CORPORA["timemachine"].sha1 in message
    assert not offline.exists()  # nothing was downloaded in its place


def test_a_shipped_copy_is_checked_once_per_process(tmp_path, monkeypatch):
    package = tmp_path / "package"
    package.mkdir()
    (package / "timemachine.txt").write_bytes((corpus.PACKAGED / "timemachine.txt").read_bytes())
    hashed = []
    real_sha1_of = corpus.sha1_of

    def counting_sha1_of(data):
        hashed.append(len(data))
        return real_sha1_of(data)

    monkeypatch.setattr(corpus, "sha1_of", counting_sha1_of)
    for _ in range(3):
        assert corpus.builtin_path("timemachine", packaged=package) == package / "timemachine.txt"
    assert len(hashed) == 1


# ---------------------------------------------------------------------------
# Built-in names in the data folder


@needs_data
@pytest.mark.parametrize(
    "name,split,file",
    [
        ("timemachine", "train", "timemachine.txt"),
        ("tinyshakespeare", "train", "tinyshakespeare.txt"),
        ("ptb", "train", "ptb/train.txt"),
        ("ptb", "valid", "ptb/valid.txt"),
        ("ptb", "test", "ptb/test.txt"),
    ],
)
def test_builtin_names_resolve_through_rnnlab_data_dir(
    name, split, file, monkeypatch, tmp_path, data_dir, not_packaged
):
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = corpus.builtin_path(name, split, fetch=no_network, packaged=not_packaged)
    assert path == data_dir / file
    assert sha1_file(path) == DATA_SHA1[file]
    assert not (tmp_path / "cache").exists()


@needs_data
def test_data_readme_lists_the_checksums_the_tests_use(data_dir):
    readme = data_dir / "README.md"
    if not readme.is_file():
        pytest.skip("no README beside the corpora")
    rows = re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{40}) \|", readme.read_text(), re.MULTILINE)
    assert dict(rows) == DATA_SHA1


def test_single_file_specs_carry_the_readme_checksums():
    assert corpus.CORPORA["timemachine"].sha1 == DATA_SHA1["timemachine.txt"]
    assert corpus.CORPORA["tinyshakespeare"].sha1 == DATA_SHA1["tinyshakespeare.txt"]


PTB_VALID = "ptb/valid.txt"


def test_the_old_variable_rnnlm_data_dir_alone_is_honoured(
    tmp_path, monkeypatch, no_data_dir_variables
):
    old = data_folder(tmp_path / "old", {PTB_VALID: " from the old folder \n"})
    monkeypatch.setenv("RNNLM_DATA_DIR", str(old))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert corpus.builtin_path("ptb", "valid", fetch=no_network) == old / PTB_VALID
    assert corpus.read_text("ptb", "valid") == " from the old folder \n"


def test_rnnlab_data_dir_wins_when_both_variables_are_set(tmp_path, monkeypatch):
    new = data_folder(tmp_path / "new", {PTB_VALID: " from the new folder \n"})
    old = data_folder(
        tmp_path / "old",
        {PTB_VALID: " from the old folder \n", "ptb/test.txt": " only in the old folder \n"},
    )
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(new))
    monkeypatch.setenv("RNNLM_DATA_DIR", str(old))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert corpus.builtin_path("ptb", "valid", fetch=no_network) == new / PTB_VALID
    assert corpus.read_text("ptb", "valid") == " from the new folder \n"
    # the old folder is not searched at all: RNNLAB_DATA_DIR names the one data folder
    assert corpus.data_dirs() == [new, tmp_path / "cache" / "rnnlab"]


def test_cache_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert corpus.cache_dir() == tmp_path / "rnnlab"


def test_a_cached_corpus_is_not_downloaded_again(offline, not_packaged):
    offline.mkdir(parents=True)
    (offline / "timemachine.txt").write_text("cached text\n")
    path = corpus.builtin_path("timemachine", fetch=no_network, packaged=not_packaged)
    assert path == offline / "timemachine.txt"


def test_unknown_split_of_a_builtin_corpus_names_the_splits(offline):
    with pytest.raises(RnnlabError, match="no 'valid' split; it has: train"):
        corpus.builtin_path("timemachine", "valid", fetch=no_network)


def test_unknown_name_in_builtin_path_lists_the_known_ones():
    with pytest.raises(RnnlabError, match="timemachine, tinyshakespeare, ptb"):
        corpus.builtin_path("timemachin")


# ---------------------------------------------------------------------------
# Downloads, with a fake fetch (the shipped copies hidden by an empty ``packaged`` folder)


def test_download_writes_the_verified_file_atomically(offline, monkeypatch, not_packaged):
    data = b"The Time Traveller\n(for so it will be convenient)\n"
    spec = fake_spec(monkeypatch, "timemachine", data)
    seen = []

    def fetch(url):
        seen.append(url)
        # nothing may be written before the whole file has arrived and been checked
        assert not offline.exists() or files_under(offline) == []
        return data

    path = corpus.builtin_path("timemachine", fetch=fetch, packaged=not_packaged)
    assert seen == [spec.url]
    assert path == offline / "timemachine.txt"
    assert path.read_bytes() == data
    assert files_under(offline) == ["timemachine.txt"]  # no temporary file left behind


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


def test_checksum_mismatch_saves_nothing_and_says_where_to_put_the_file(offline, not_packaged):
    spec = corpus.CORPORA["timemachine"]
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path(
            "timemachine", fetch=lambda url: b"<html>captive portal</html>", packaged=not_packaged
        )
    message = str(info.value)
    assert "checksum mismatch" in message and spec.sha1 in message
    assert hashlib.sha1(b"<html>captive portal</html>").hexdigest() in message
    check_nothing_saved_and_hint(message, offline, spec)


@pytest.mark.parametrize(
    "error",
    [
        OSError("connection reset"),
        urllib.error.URLError("name resolution failed"),
        TimeoutError("timed out"),
    ],
)
def test_failed_download_saves_nothing_and_says_where_to_put_the_file(offline, not_packaged, error):
    def fetch(url):
        raise error

    spec = corpus.CORPORA["tinyshakespeare"]
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path("tinyshakespeare", fetch=fetch, packaged=not_packaged)
    message = str(info.value)
    assert "could not download corpus 'tinyshakespeare'" in message
    assert str(error) in message or str(error.args[0]) in message
    check_nothing_saved_and_hint(message, offline, spec)


def test_ptb_zip_is_unpacked_into_train_valid_test(offline, monkeypatch):
    texts = {
        "train": " aer banknote \n no it was n't \n",
        "valid": " consumers may want \n",
        "test": " no it was n't black monday \n",
    }
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


def test_the_command_reads_a_shipped_corpus_with_no_data_folder(tmp_path, cli):
    cache = tmp_path / "cache"
    cache.mkdir()
    no_folder = {variable: "" for variable in corpus.DATA_DIR_VARIABLES}  # empty means unset
    result = cli(
        "data",
        "timemachine",
        "--mode",
        "d2l",
        "--json",
        env_extra={**no_folder, "XDG_CACHE_HOME": str(cache)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] == 170580
    assert files_under(cache) == []  # read from the package, not downloaded


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


@pytest.mark.parametrize(
    "data,offset,byte",
    [
        ("caf\u00e9".encode("latin-1") + b" au lait", 3, 0xE9),
        (b"\xef\xbb\xbfok \xff", 6, 0xFF),  # offset counts the BOM
        ("naïve ".encode() + b"\xc3", 7, 0xC3),  # truncated two-byte sequence at the end
    ],
)
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
