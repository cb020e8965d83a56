"""Corpora: built-in names (shipped, in the data folder, cached or downloaded with a fake
fetch), reading text files and folders, and the bounds on all of them (no pipes, devices
or folders where a file belongs; limited sizes; cache writes that fail in one line)."""

import dataclasses
import errno
import hashlib
import importlib.util
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from rnnlab import corpus
from rnnlab.errors import RnnlabError
from rnnlab.tokenize import tokenize
from rnnlab.vocab import Vocab

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
    name, split, file, monkeypatch, tmp_path, not_packaged
):
    data = data_folder(tmp_path / "data", {f: f" the data folder's {f} \n" for f in DATA_SHA1})
    monkeypatch.setenv("RNNLAB_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = corpus.builtin_path(name, split, fetch=no_network, packaged=not_packaged)
    assert path == data / file
    assert path.read_text() == f" the data folder's {file} \n"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_the_tests_read_ptb_from_the_stand_in_not_the_network(split, data_dir):
    """What the suite trains on as `ptb` (see conftest.DATA_DIR), in every fresh clone."""
    path = corpus.builtin_path("ptb", split, fetch=no_network)
    assert path == data_dir / "ptb" / f"{split}.txt"
    assert corpus.read_text("ptb", split) == path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# The stand-in Penn Treebank (tests/data/make_ptb.py) and the real one's format

NUMBER = re.compile(r"[\d.,]+")


def ptb_format_problems(texts):
    """What in ``texts`` (split -> text of ptb/<split>.txt) departs from the Penn Treebank's
    format, at most a few lines of it; [] if nothing does.

    The format: one sentence a line, a space before and after every word, no empty line;
    lower-case words, numbers written N, rare words <unk> (and no other word in angle
    brackets); the held-out splits use only words of the training split.
    """
    problems = []
    train_words = set(texts["train"].split())
    for split, text in texts.items():
        if not text.endswith(" \n"):
            problems.append(f"{split}: the last line does not end in ' \\n'")
        lines = text.split("\n")[:-1]
        bad = [n for n, line in enumerate(lines, 1) if not re.fullmatch(r"( [^ ]+)+ ", line)]
        if bad:
            problems.append(f"{split}: lines {bad[:5]} are not ' word word ... '")
        words = set(text.split())
        odd = sorted(
            w
            for w in words - {"N", "<unk>"}
            if w != w.lower() or "<" in w or ">" in w or NUMBER.fullmatch(w)
        )
        if odd:
            problems.append(f"{split}: words not in PTB's form: {odd[:5]}")
        if not {"N", "<unk>"} <= words:
            problems.append(f"{split}: no N or no <unk>")
        if words - train_words:
            problems.append(
                f"{split}: words not in the training split: {sorted(words - train_words)[:5]}"
            )
    return problems


def ptb_texts(folder):
    return {
        split: (folder / "ptb" / f"{split}.txt").read_text(encoding="utf-8")
        for split in ("train", "valid", "test")
    }


def load_ptb_maker():
    """tests/data/make_ptb.py as a module: the test runs the code that wrote the stand-in."""
    path = Path(__file__).parent / "data" / "make_ptb.py"
    spec = importlib.util.spec_from_file_location("make_ptb", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stand_in_penn_treebank_is_what_its_script_writes(data_dir):
    assert ptb_texts(data_dir) == load_ptb_maker().corpus_files()


def test_the_stand_in_penn_treebank_has_the_real_ones_format(data_dir):
    texts = ptb_texts(data_dir)
    assert ptb_format_problems(texts) == []
    # big enough to fill a batch of the ptb recipes (20 x 35) in every split but small
    tokens = {split: tokenize(text, "words") for split, text in texts.items()}
    assert all(20 * 35 < len(t) < 20_000 for t in tokens.values()), {
        split: len(t) for split, t in tokens.items()
    }


def test_the_format_check_finds_what_departs_from_it():
    texts = {"train": " a N <unk> \n b \n", "valid": " a N <unk> \n", "test": " a N <unk> \n"}
    assert ptb_format_problems(texts) == []
    for split, text, words in [
        ("train", "a N <unk>\n", ["not ' word word"]),
        ("train", " a N <unk> \n\n", ["lines [2]"]),
        ("valid", " A N <unk> \n", ["'A'", "not in the training split"]),
        ("test", " a 1990 N <unk> \n", ["'1990'"]),
        ("test", " a N <eos> <unk> \n", ["'<eos>'"]),
        ("valid", " a N \n", ["no N or no <unk>"]),
        ("test", " a N <unk> ", ["does not end"]),
    ]:
        problems = "; ".join(ptb_format_problems({**texts, split: text}))
        for word in words:
            assert word in problems, (text, word, problems)


# ---------------------------------------------------------------------------
# The verified copies of the real corpora (skipped where there are none: see conftest)


@pytest.mark.real_data
@pytest.mark.parametrize("file", list(DATA_SHA1))
def test_the_verified_corpora_have_the_readme_checksums(file, verified_data_dir):
    assert sha1_file(verified_data_dir / file) == DATA_SHA1[file]


@pytest.mark.real_data
def test_data_readme_lists_the_checksums_the_tests_use(verified_data_dir):
    readme = (verified_data_dir / "README.md").read_text()
    rows = re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{40}) \|", readme, re.MULTILINE)
    assert dict(rows) == DATA_SHA1


@pytest.mark.real_data
def test_the_real_penn_treebank_has_mikolovs_sizes(verified_data_dir):
    """The sizes the ptb recipes were measured on: words with <eos> per line, 10k words."""
    tokens = {
        split: tokenize(text, "words") for split, text in ptb_texts(verified_data_dir).items()
    }
    assert {split: len(t) for split, t in tokens.items()} == {
        "train": 929_589,
        "valid": 73_760,
        "test": 82_430,
    }
    assert len(Vocab(tokens["train"])) == 10_000


@pytest.mark.real_data
def test_the_real_penn_treebank_has_the_format_the_stand_in_copies(verified_data_dir):
    assert ptb_format_problems(ptb_texts(verified_data_dir)) == []


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


# ---------------------------------------------------------------------------
# Every file is read with a bound: named pipes, devices, folders and sizes

has_fifos = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
has_dev_zero = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")

# corpus.read_text(argv[1]) in a child: prints {"text": ...} or {"error": ...}
READ_IN_CHILD = """
import json, sys
from rnnlab import corpus
from rnnlab.errors import RnnlabError
try:
    print(json.dumps({"text": corpus.read_text(sys.argv[1])}))
except RnnlabError as e:
    print(json.dumps({"error": str(e)}))
"""


def _one_gib_of_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def read_text_elsewhere(source, timeout=60):
    """corpus.read_text(source) in a child Python with 1 GiB of memory and a time limit,
    so that reading a pipe or a device without bounds fails the test instead of hanging
    it or filling this machine's memory. Returns the child's {"text"} or {"error"}."""
    result = subprocess.run(
        [sys.executable, "-c", READ_IN_CHILD, str(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_one_gib_of_memory,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def check_one_line(message, *words):
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


@has_fifos
def test_a_named_pipe_as_the_corpus_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    started = time.monotonic()
    error = read_text_elsewhere(fifo)["error"]
    check_one_line(error, str(fifo), "named pipe", "regular", "save piped text to a file")
    assert time.monotonic() - started < 30  # the open did not wait for a writer


@has_dev_zero
def test_dev_zero_as_the_corpus_is_an_error_not_unbounded_memory():
    error = read_text_elsewhere("/dev/zero")["error"]
    check_one_line(error, "/dev/zero", "character device", "regular UTF-8 text file")


@has_fifos
def test_a_named_pipe_ending_in_txt_inside_a_corpus_folder_is_named(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("first")
    os.mkfifo(folder / "b.txt")
    error = read_text_elsewhere(folder)["error"]
    check_one_line(error, str(folder / "b.txt"), "named pipe", "remove it from")


@has_dev_zero
def test_a_device_ending_in_txt_inside_a_corpus_folder_is_named(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("first")
    (folder / "zero.txt").symlink_to("/dev/zero")
    error = read_text_elsewhere(folder)["error"]
    check_one_line(error, str(folder / "zero.txt"), "character device", "remove it from")


def test_a_corpus_folder_skips_folders_named_txt_and_dangling_links(tmp_path):
    folder = tmp_path / "books"
    (folder / "part.txt").mkdir(parents=True)  # a folder whose name ends in .txt is searched
    (folder / "part.txt" / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / ".#c.txt").symlink_to("user@host.1234")  # an editor's lock file
    assert corpus.read_text(str(folder)) == "first\nsecond"


@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_folder_where_a_builtin_file_belongs_is_an_error_not_a_download(
    split, tmp_path, monkeypatch, offline
):
    in_the_way = data_folder(tmp_path / "data", {f"ptb/{split}.txt/inside.txt": " a b c \n"})
    in_the_way = in_the_way / "ptb" / f"{split}.txt"

    def unreachable(*args, **kwargs):
        raise AssertionError("nothing may be downloaded past a file in the data folder")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)  # what read_text's fetch calls
    with pytest.raises(RnnlabError) as info:
        corpus.read_text("ptb", split)
    check_one_line(str(info.value), str(in_the_way), "is a folder, not a regular file", "remove it")
    assert not offline.exists()


def test_a_file_up_to_the_corpus_limit_is_read_and_a_larger_one_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CORPUS_LIMIT", 100)
    path = tmp_path / "corpus.txt"
    path.write_text("x" * 100)
    assert corpus.read_text(str(path)) == "x" * 100
    path.write_text("x" * 101)
    with pytest.raises(RnnlabError) as info:
        corpus.read_text(str(path))
    check_one_line(str(info.value), str(path), "101 bytes, more than the 100 bytes")


def test_a_folder_counts_its_txt_files_together_against_the_corpus_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CORPUS_LIMIT", 100)
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("a" * 50)
    (folder / "b.txt").write_text("b" * 50)
    assert corpus.read_text(str(folder)) == "a" * 50 + "\n" + "b" * 50  # exactly the limit
    (folder / "c.txt").write_text("c")
    with pytest.raises(RnnlabError) as info:
        corpus.read_text(str(folder))
    check_one_line(str(info.value), str(folder), "more than 100 bytes", str(folder / "c.txt"))


def test_a_download_larger_than_the_limit_is_refused_even_with_the_right_checksum(
    offline, monkeypatch, not_packaged
):
    monkeypatch.setattr(corpus, "DOWNLOAD_LIMIT", 100)
    data = b"x" * 101
    spec = fake_spec(monkeypatch, "tinyshakespeare", data)
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path("tinyshakespeare", fetch=lambda url: data, packaged=not_packaged)
    message = str(info.value)
    check_one_line(message, "larger than 100 bytes", "nothing was saved")
    check_nothing_saved_and_hint(message, offline, spec)


class FakeResponse:
    """What urlopen returns, serving ``data`` (over and over if ``endless``) 7 bytes at a time."""

    def __init__(self, data, endless=False):
        self.stream = itertools.cycle(data) if endless else iter(data)
        self.served = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n=-1):
        if n is None or n < 0:
            raise AssertionError("the response was read without a limit")
        piece = bytes(itertools.islice(self.stream, min(n, 7)))
        self.served += len(piece)
        return piece


def test_the_download_reads_the_response_with_a_limit(offline, monkeypatch, not_packaged):
    monkeypatch.setattr(corpus, "DOWNLOAD_LIMIT", 100)
    response = FakeResponse(b"to be or not to be\n", endless=True)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: response)
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path("tinyshakespeare", packaged=not_packaged)
    check_one_line(str(info.value), "could not download", "larger than 100 bytes")
    assert response.served == 101  # one byte past the limit says it is too large
    assert not offline.exists() or files_under(offline) == []


def test_a_download_of_exactly_the_limit_is_saved(offline, monkeypatch, not_packaged):
    data = b"to be or not to be, that is the question\n"
    fake_spec(monkeypatch, "tinyshakespeare", data)
    monkeypatch.setattr(corpus, "DOWNLOAD_LIMIT", len(data))
    response = FakeResponse(data)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: response)
    path = corpus.builtin_path("tinyshakespeare", packaged=not_packaged)
    assert path.read_bytes() == data


@pytest.mark.parametrize("source", ["", "   ", "\t\n"])
def test_an_empty_or_blank_source_is_refused_not_read_as_this_folder(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file that happens to be in the current folder")
    with pytest.raises(RnnlabError) as info:
        corpus.read_text(source)
    message = str(info.value)
    check_one_line(message, repr(source), "'.' for this folder")
    assert ("is empty" if not source else "only white space") in message


@pytest.mark.parametrize(
    "source",
    ["~no_such_user_of_rnnlab/corpus.txt", "x" * 5000 + ".txt"],
    ids=["no such user", "name too long"],
)
def test_a_path_the_system_cannot_look_up_is_a_one_line_error(source):
    with pytest.raises(RnnlabError) as info:
        corpus.read_text(source)
    check_one_line(str(info.value), "cannot read", "regular UTF-8 text file")


def _disk_full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def _read_only_mkdir(self, *args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system", str(self))


@pytest.mark.parametrize("failure", ["disk full", "file in the way", "unwritable", "mkdir fails"])
@pytest.mark.parametrize("name", ["timemachine", "ptb"])
def test_a_cache_that_cannot_be_written_is_a_one_line_error_and_keeps_nothing(
    failure, name, offline, monkeypatch, not_packaged
):
    texts = {"train": " a b \n", "valid": " c \n", "test": " d \n"}
    data = ptb_zip(texts) if name == "ptb" else b"The Time Traveller\n"
    spec = fake_spec(monkeypatch, name, data)
    words = [f"could not save corpus {name!r}", str(offline), "RNNLAB_DATA_DIR", spec.url]
    if failure == "disk full":
        monkeypatch.setattr(os, "fsync", _disk_full)
        words.append("No space left on device")
    elif failure == "file in the way":
        offline.parent.mkdir()
        offline.write_text("a file where the cache folder belongs")
    elif failure == "unwritable":
        real_open = os.open

        def refuse_in_cache(path, flags, *args, **kwargs):
            if str(path).startswith(str(offline)) and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse_in_cache)  # as root, chmod would not stop it
        words.append("Permission denied")
    else:
        monkeypatch.setattr(Path, "mkdir", _read_only_mkdir)
        words.append("Read-only file system")
    with pytest.raises(RnnlabError) as info:
        corpus.builtin_path(name, fetch=lambda url: data, packaged=not_packaged)
    monkeypatch.undo()
    check_one_line(str(info.value), *words)
    if offline.is_dir():
        assert files_under(offline) == []  # no temporary file, nothing half-written


@has_fifos
@has_dev_zero
@pytest.mark.parametrize("kind", ["named pipe", "character device", "named pipe in a folder"])
def test_the_command_refuses_a_pipe_or_device_as_the_corpus_in_one_line(
    kind, tmp_path, cli, clean_error
):
    if kind == "named pipe":
        source = bad = tmp_path / "corpus.txt"
        os.mkfifo(bad)
    elif kind == "character device":
        source = bad = Path("/dev/zero")
    else:
        source = tmp_path / "books"
        source.mkdir()
        (source / "a.txt").write_text("some text")
        bad = source / "b.txt"
        os.mkfifo(bad)
    result = cli("data", source, timeout=120)  # a hang or unbounded read ends here
    clean_error(result, str(bad), kind.split(" in ")[0], "not a regular file")


def test_the_command_refuses_an_empty_source(tmp_path, monkeypatch, cli, clean_error):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not to be read")
    clean_error(cli("data", "", timeout=120), "''", "empty")  # config or corpus may refuse it
