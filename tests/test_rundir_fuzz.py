"""Fuzzing the JSON files of a run directory (issue 10): nothing in them gives a traceback.

Each case copies one tiny trained run, changes one JSON file of the copy (config.json,
vocab.json, checkpoint.json, source.json, and the current checkpoint's trainer.json and
manifest.json), runs one of ``generate``, ``eval`` and ``train --resume`` through
``cli.main`` in this process (each change meets all three, each on its own copy), and
asserts what a user must see:

- exit status 2 and one line "rnnlab: error: ..." on stderr (after any "rnnlab: warning:"
  lines), no exception out of ``main`` and no Python warning; or status 0, where the change
  is harmless, with nothing but "rnnlab: warning:" lines on stderr;
- once the change is undone (the original bytes and file type put back), the run loads
  and nothing else in it was changed; a resume that went through leaves a run that loads.

The changes: any JSON value in place of the file's; one value inside the real object of
another type (or deleted); unknown keys; truncated, flipped and invalid UTF-8 bytes;
nesting 33, 900 and 10,000 deep; files of a few MiB; other encodings; and (without
hypothesis) symbolic links to /etc/passwd, a folder, a device, nothing or themselves, a
folder and a named pipe in place of the file. A named pipe runs the commands in a child
process with a timeout, as it could hang this one.

trainer.json, vocab.json and manifest.json are covered by sha256 sums, so each change to
them is also tried "re-signed": the manifest and checkpoint.json are rewritten with the
sums of the changed file, as a hostile or badly repaired run would have them, so that what
is tested is the reading of the types inside and not only the checksum.

    pytest tests/test_rundir_fuzz.py -s                            # -s prints the case counts
    RNNLAB_FUZZ_EXAMPLES=200 pytest tests/test_rundir_fuzz.py -s   # more cases (default 20)
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import COMMAND_ENV, TINY_RUN, run_cli
from rnnlab import cli, trained
from rnnlab.config import RESUMABLE_CHANGES

EXAMPLES = int(os.environ.get("RNNLAB_FUZZ_EXAMPLES", "20"))  # per test and file
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
TINY = ["timemachine", *TINY_RUN, "--epochs", "1", "--quiet"]
COMMANDS = ("generate", "eval", "train")  # hypothesis shrinks towards the first: the fastest
IN_CHECKPOINT = ("trainer.json", "manifest.json")  # inside the current checkpoint folder
FILES = ("config.json", "vocab.json", "checkpoint.json", "source.json", *IN_CHECKPOINT)
SIGNED = ("trainer.json", "manifest.json", "vocab.json")  # covered by a sha256 sum
TARGETS = [*FILES, *(f"{name}+resigned" for name in SIGNED)]
# Written by any command (the lock) or rewritten from the checkpoint by a resume.
REWRITTEN = {"train.lock", "metrics.jsonl", "perplexity.png"}
MIB = 1 << 20

CASES: Counter = Counter()  # (target, kind of change) -> cases run
COMMANDS_RUN: Counter = Counter()  # command -> cases run
STATUSES: Counter = Counter()  # (command, exit status) -> cases
_numbers = itertools.count()

# Minutes of training, subprocesses and fault injection: the full suite (CI) runs it, the fast
# tier not.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def argv(command: str, run: Path) -> list[str]:
    return {
        "generate": ["generate", str(run), "--length", "3", "--checkpoint", "latest"],
        "eval": ["eval", str(run), "--checkpoint", "latest"],
        "train": ["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]
        + ["--device", "cpu", "--threads", "1"],
    }[command]


# ---------------------------------------------------------------- JSON text, hostile included


class Raw(str):
    """JSON text written as it is: numbers Python will not print, nesting it cannot recurse."""


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()  # a path mutation that removes the key (or list item)


def nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


HOSTILE_NUMBERS = [
    2**63,
    -(2**63) - 1,
    2**64,
    10**100,
    Raw("1" + "0" * 5000),  # past Python's 4300-digit limit on int("...")
    Raw("1e400"),  # a float that overflows to inf
    Raw("-0"),
    1e308,
    -1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
]
HOSTILE_TEXT = ["", "\x00", "../../../etc/passwd", "/dev/zero", "a" * 10_000, "ü\u202e\n"]
SURROGATES = [Raw('"\\ud800"'), Raw('"\\udfff\\ud800"')]  # valid JSON; not encodable as UTF-8
HOSTILE_TEXT += SURROGATES
DEEP = [nested(33), nested(900), nested(10_000)]  # past rnnlab's limit, below, past Python's

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(HOSTILE_NUMBERS + HOSTILE_TEXT + DEEP)
)
keys = st.text(max_size=10) | st.sampled_from(["", "__proto__", *SURROGATES])
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4),
    max_leaves=12,
)


def dump(value: Any) -> str:
    """JSON text of ``value``; floats as Python writes them (NaN, Infinity), Raw as it is."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dump(k)}: {dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def encode(value: Any) -> bytes:
    return (dump(value) + "\n").encode("utf-8")


def retyped(value: Any) -> st.SearchStrategy:
    """Values of another type (or size) in place of ``value``, or its removal."""
    if isinstance(value, bool):
        specific = st.sampled_from([0, 1, "true", str(value).lower()])
    elif isinstance(value, int):
        specific = st.sampled_from(
            [str(value), float(value), -1, -value, [value], True, *HOSTILE_NUMBERS]
        )
    elif isinstance(value, float):
        whole = [int(value)] if value == value and abs(value) != float("inf") else []
        specific = st.sampled_from([str(value), [value], -value, 0, *whole, *HOSTILE_NUMBERS])
    elif isinstance(value, str):
        specific = st.sampled_from([[value], {"": value}, len(value), value.upper(), *HOSTILE_TEXT])
    elif isinstance(value, list):
        specific = st.sampled_from(
            [[value], value[::-1], value[:1], {str(i): v for i, v in enumerate(value)}, *DEEP]
        )
    elif isinstance(value, dict):
        specific = st.sampled_from([list(value.values()), [value], list(value), {}, *DEEP])
    else:
        specific = st.sampled_from([0, "", [], {}, "null"])
    return st.one_of(
        specific, st.sampled_from([None, [], {}, DELETE]), st.text(max_size=8), json_values
    )


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) to a value inside ``obj``, the root excluded."""
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    out = []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(paths(value, (*prefix, key)))
    return out


def get_at(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def set_at(obj: Any, path: tuple, value: Any) -> Any:
    """A copy of ``obj`` with the value at ``path`` replaced by ``value`` (or deleted)."""
    obj = copy.deepcopy(obj)
    parent = get_at(obj, path[:-1])
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


# ---------------------------------------------------------------- run directories


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(run: Path) -> dict[str, tuple]:
    """Each entry of ``run`` (links not followed): its kind and, for a file, its sha256."""
    out: dict[str, tuple] = {}
    for folder, dirs, names in os.walk(run):
        for name in dirs + names:
            path = Path(folder) / name
            rel = path.relative_to(run).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(mode):
                out[rel] = ("folder",)
            elif stat.S_ISREG(mode):
                out[rel] = ("file", sha256(path.read_bytes()))
            else:
                out[rel] = ("special", stat.S_IFMT(mode))
    return out


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    keys = (set(before) | set(after)) - REWRITTEN
    return sorted(k for k in keys if before.get(k) != after.get(k))


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Pristine:
    """The tiny trained run every case copies, and what it holds (never changed)."""

    def __init__(self, run: Path, outside: Path):
        self.run, self.outside = run, outside
        self.current = json.loads((run / "checkpoint.json").read_bytes())["current"]
        self.snapshot = snapshot(run)

    def relative(self, name: str) -> str:
        return f"{self.current}/{name}" if name in IN_CHECKPOINT else name

    def has(self, name: str) -> bool:
        return (self.run / self.relative(name)).is_file()

    def original(self, target: str) -> bytes:
        name = target.partition("+")[0]
        if not self.has(name):
            pytest.skip(f"this version of rnnlab writes no {name}")
        return (self.run / self.relative(name)).read_bytes()


class Case:
    """A fresh copy of the pristine run with one JSON file changed, and the way back."""

    def __init__(self, pristine: Pristine, root: Path, target: str):
        self.pristine, self.target = pristine, target
        self.name, _, signed = target.partition("+")
        self.resign = bool(signed)
        if not pristine.has(self.name):
            pytest.skip(f"this version of rnnlab writes no {self.name}")
        self.run = root / f"case-{next(_numbers)}"
        shutil.copytree(pristine.run, self.run, symlinks=True)
        self.path = self.run / pristine.relative(self.name)
        self.original = self.path.read_bytes()
        self.saved: dict[Path, bytes] = {}
        self.extras: list[Path] = []

    def obj(self) -> Any:
        return json.loads(self.original)

    def _keep(self, path: Path) -> None:
        if path not in self.saved:
            self.saved[path] = path.read_bytes()

    def write(self, data: bytes) -> None:
        """Put ``data`` in the file (and, re-signed, its sums in the manifest and pointer)."""
        self._keep(self.path)
        remove(self.path)
        self.path.write_bytes(data)
        if self.resign:
            self._resign(data)

    def replace(self, make) -> None:
        """Put something else where the file was: ``make(path)`` creates it (and returns
        any other entries it made beside it)."""
        self._keep(self.path)
        remove(self.path)
        self.extras = list(make(self.path) or ())

    def _resign(self, data: bytes) -> None:
        manifest_path = self.run / self.pristine.relative("manifest.json")
        pointer_path = self.run / "checkpoint.json"
        manifest_bytes = data
        if self.name != "manifest.json":
            manifest = json.loads(manifest_path.read_bytes())
            if self.name == "trainer.json":
                manifest["files"]["trainer.json"] = sha256(data)
            else:
                manifest["vocab_sha256"] = sha256(data)
            manifest_bytes = encode(manifest)
            self._keep(manifest_path)
            manifest_path.write_bytes(manifest_bytes)
        pointer = json.loads(pointer_path.read_bytes())
        pointer["manifest_sha256"] = sha256(manifest_bytes)
        self._keep(pointer_path)
        pointer_path.write_bytes(encode(pointer))

    def undo(self) -> None:
        for path in self.extras:
            remove(path)
        for path, data in self.saved.items():
            remove(path)
            path.write_bytes(data)

    def close(self) -> None:
        shutil.rmtree(self.run, ignore_errors=True)


def run_command(command: str, run: Path, capfd) -> int:
    """``rnnlab COMMAND`` in this process; the user's view of it must be clean.

    An exception out of main is a traceback for the user: it is not caught here, so that
    hypothesis tells distinct ones apart and reports each.
    """
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            status = cli.main(argv(command, run))
        except SystemExit as e:  # argparse (the arguments are valid: it should not come)
            status = e.code
    out, err = capfd.readouterr()
    STATUSES[(command, status)] += 1
    check_stderr(status, err)
    assert not caught, f"Python warning(s) printed to the user: {[str(w.message) for w in caught]}"
    return status


def check_stderr(status: Any, err: str) -> None:
    lines = err.splitlines()
    assert "Traceback" not in err, err
    warned = all(line.startswith("rnnlab: warning: ") for line in lines[:-1])
    if status == 0:
        assert warned and all(line.startswith("rnnlab: warning: ") for line in lines[-1:]), err
    else:
        assert status == 2, (status, err)
        assert lines and lines[-1].startswith("rnnlab: error: ") and warned, err


def only_resumable_changes(case: Case) -> bool:
    """Whether config.json differs from the pristine one only in options a resume may change."""
    try:
        before, after = (json.loads(run.joinpath("config.json").read_bytes())
                         for run in (case.pristine.run, case.run))  # fmt: skip
    except ValueError:
        return False
    drop = lambda config: {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}
    return isinstance(after, dict) and drop(before) == drop(after)


GENERATE_CHECKED: set[str] = set()  # tests that saw the undone run generate once


def check_case(case: Case, command: str, kind: str, capfd, request) -> None:
    """Run ``command`` on the changed run, then undo the change and check the run is whole."""
    CASES[(case.target, kind)] += 1
    COMMANDS_RUN[command] += 1
    status = run_command(command, case.run, capfd)
    if status == 0 and command == "train":  # a resume went through: the run it left loads
        trained.load_run(case.run)
        return
    case.undo()
    left = changed(case.pristine.snapshot, snapshot(case.run))
    if command == "train" and left == ["config.json"] and only_resumable_changes(case):
        left = []  # a resume that failed once training had begun: --epochs 2 was recorded
    assert left == [], "a failed command changed the run"
    trained.load_run(case.run)
    if request.node.nodeid not in GENERATE_CHECKED:
        GENERATE_CHECKED.add(request.node.nodeid)
        assert run_command("generate", case.run, capfd) == 0


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One tiny trained run (one epoch, 16 units); cases copy it, nothing writes to it."""
    root = tmp_path_factory.mktemp("fuzz")
    run_cli("train", *TINY, "--out", root / "run", check=0)
    outside = root / "outside"  # targets of links that lead out of the run
    (outside / "folder").mkdir(parents=True)
    (outside / "folder" / "config.json").write_text("{}")
    shutil.copy("/etc/passwd", outside / "passwd")
    etc_passwd = sha256(Path("/etc/passwd").read_bytes())
    made = Pristine(root / "run", outside)
    yield made
    print_counts()
    assert changed(made.snapshot, snapshot(made.run)) == [], "a case changed the pristine run"
    assert sha256(Path("/etc/passwd").read_bytes()) == etc_passwd


def print_counts() -> None:
    print(f"\nrun-directory fuzzing: {sum(CASES.values())} cases (RNNLAB_FUZZ_EXAMPLES={EXAMPLES})")
    for command, n in sorted(COMMANDS_RUN.items()):
        by_status = {status: k for (c, status), k in sorted(STATUSES.items()) if c == command}
        child = {
            status: k for (c, status), k in sorted(STATUSES.items()) if c == f"{command} (child)"
        }
        print(f"  {command:10} {n:5}  (by exit status: {by_status}; in a child process: {child})")
    for target in TARGETS:
        kinds = {kind: n for (t, kind), n in CASES.items() if t == target}
        if kinds:
            detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))
            print(f"  {target:24} {sum(kinds.values()):5}  ({detail})")


@pytest.fixture
def case(pristine, tmp_path):
    """A factory of fresh cases for ``target``, removed after the test."""
    made: list[Case] = []

    def new(target: str) -> Case:
        c = Case(pristine, tmp_path, target)
        made.append(c)
        return c

    yield new
    for c in made:
        c.close()


# ---------------------------------------------------------------- hypothesis


def _each_command(case, target, kind, capfd, request, make, commands=COMMANDS) -> None:
    """Change ``target`` to ``make(obj, raw)`` (bytes) in a fresh copy for each command."""
    for command in commands:
        c = case(target)
        c.write(make(c.obj(), c.original))
        check_case(c, command, kind, capfd, request)
        c.close()


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(value=json_values)
def test_any_json_value_in_place_of_a_file_is_a_clean_error(case, capfd, request, target, value):
    _each_command(case, target, "value", capfd, request, lambda obj, raw: encode(value))


def _retype(data, obj: Any, within: tuple = ()) -> bytes:
    """``obj`` with one value (under the path ``within``) of another type, or deleted."""
    candidates = [p for p in paths(obj) if p[: len(within)] == within]
    path = data.draw(st.sampled_from(candidates), label="path")
    value = data.draw(retyped(get_at(obj, path)), label="value")
    return encode(set_at(obj, path, value))


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(data=st.data())
def test_a_value_of_another_type_inside_a_file_is_a_clean_error(
    pristine, case, capfd, request, target, data
):
    mutated = _retype(data, json.loads(pristine.original(target)))
    _each_command(case, target, "retype", capfd, request, lambda obj, raw: mutated)


@pytest.mark.parametrize("within", ["progress", "optimizer", "history", "epoch"])
@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(data=st.data())
def test_resume_from_trainer_state_of_other_types_is_a_clean_error(
    pristine, case, capfd, request, within, data
):
    """What only a resume reads (the optimizer, the position in the epoch, the history),
    re-signed, so that the types inside are what is tested."""
    mutated = _retype(data, json.loads(pristine.original("trainer.json")), (within,))
    _each_command(
        case, "trainer.json+resigned", "retype-resume", capfd, request,
        lambda obj, raw: mutated, commands=("train",),
    )  # fmt: skip


# Numbers of trainer.json that have the right type and sign but do not fit the run: the
# pristine run has trained 1 epoch of fewer than TINY_TOKENS tokens, so no epoch of it has
# TINY_TOKENS batches. path in trainer.json -> the out-of-range values for it.
TINY_TOKENS = int(TINY_RUN[TINY_RUN.index("--max-tokens") + 1])
BEYOND = 2**62
OUT_OF_RANGE = {
    "progress.batch": st.integers(TINY_TOKENS, BEYOND),  # more batches than the epoch has
    "progress.tokens": st.integers(1, BEYOND),  # tokens in no batch (the epoch is at batch 0)
    "epoch": st.integers(2, BEYOND),  # epochs the history does not list
    "schedule.batches": st.integers(TINY_TOKENS, BEYOND),  # more batches than were trained
    "history.0.epoch": st.integers(2, BEYOND),  # the first epoch numbered otherwise
    "schedule.best_batch": st.integers(1, BEYOND),  # a best after the checkpoint's position
}


def _set_path(obj: Any, path: str, value: Any) -> Any:
    """A copy of ``obj`` with the value at the dotted ``path`` set to ``value``."""
    obj = copy.deepcopy(obj)
    inner, keys = obj, path.split(".")
    for key in keys[:-1]:
        inner = inner[int(key)] if isinstance(inner, list) else inner[key]
    inner[int(keys[-1]) if isinstance(inner, list) else keys[-1]] = value
    return obj


@pytest.mark.parametrize("path", OUT_OF_RANGE)
@FUZZ
@given(data=st.data())
def test_a_position_out_of_range_for_the_run_is_a_damaged_checkpoint(
    pristine, case, capfd, request, path, data
):
    """Re-signed, so only the ranges are tested: a resume must not train from a position
    the run never had (a batch past the epoch's end once trained an 'epoch' of 0 tokens)."""
    value = data.draw(OUT_OF_RANGE[path], label=path)
    mutated = _set_path(json.loads(pristine.original("trainer.json")), path, value)
    c = case("trainer.json+resigned")
    c.write(encode(mutated))
    CASES[(c.target, "out-of-range")] += 1
    COMMANDS_RUN["train"] += 1
    status = run_command("train", c.run, capfd)
    assert status == 2, f"a resume from {path} = {value} went through"
    c.undo()
    assert changed(c.pristine.snapshot, snapshot(c.run)) == [], "a failed resume changed the run"
    c.close()


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(data=st.data())
def test_unknown_keys_are_ignored_or_a_clean_error(pristine, case, capfd, request, target, data):
    obj = json.loads(pristine.original(target))
    objects = [()] + [p for p in paths(obj) if isinstance(get_at(obj, p), dict)]
    where = data.draw(st.sampled_from(objects), label="object")
    added = data.draw(st.dictionaries(keys, json_values, min_size=1, max_size=3), label="keys")
    get_at(obj, where).update(added)
    _each_command(case, target, "unknown-keys", capfd, request, lambda o, raw: encode(obj))


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(
    damage=st.sampled_from(["truncate", "flip", "invalid-utf8"]),
    where=st.floats(0, 1, exclude_max=True),
    byte=st.integers(1, 255),
    bad=st.sampled_from([b"\xff", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]),
)
def test_damaged_bytes_are_a_clean_error(case, capfd, request, target, damage, where, byte, bad):
    def damaged(obj: Any, raw: bytes) -> bytes:
        data = bytearray(raw)
        at = int(where * len(data))
        if damage == "truncate":
            del data[at:]
        elif damage == "flip":
            data[at] ^= byte
        else:
            data[at:at] = bad
        return bytes(data)

    _each_command(case, target, f"bytes:{damage}", capfd, request, damaged)


# ---------------------------------------------------------------- depth, size, encodings


def _with_key(obj: Any, key: str, value: Any) -> Any:
    return {**obj, key: value} if isinstance(obj, dict) else {"": obj, key: value}


SHAPES = {
    "empty": lambda obj, raw: b"",
    "whitespace": lambda obj, raw: b" \n\t",
    "utf8-bom": lambda obj, raw: b"\xef\xbb\xbf" + raw,
    "utf16": lambda obj, raw: raw.decode("utf-8").encode("utf-16"),
    "nul-after": lambda obj, raw: raw + b"\x00",
    "two-values": lambda obj, raw: raw + raw,
    "duplicate-key-null": lambda obj, raw: (
        raw.rstrip()[:-1] + b', "' + next(iter(obj)).encode() + b'": null}\n'
        if isinstance(obj, dict) and obj
        else b"{}"
    ),
    "deep-list-10000": lambda obj, raw: nested(10_000).encode(),
    "deep-object-10000": lambda obj, raw: ('{"a": ' * 10_000 + "0" + "}" * 10_000).encode(),
    "deep-key-33": lambda obj, raw: encode(_with_key(obj, "deep", nested(33))),
    "deep-key-900": lambda obj, raw: encode(_with_key(obj, "deep", nested(900))),
    "deep-key-10000": lambda obj, raw: encode(_with_key(obj, "deep", nested(10_000))),
    "array-4MiB": lambda obj, raw: ("[" + "0," * (2 * MIB) + "0]").encode(),
    "string-key-4MiB": lambda obj, raw: encode(_with_key(obj, "big", "a" * (4 * MIB))),
    "many-keys-3MiB": lambda obj, raw: encode(
        {**(obj if isinstance(obj, dict) else {"": obj}), **{f"k{i}": i for i in range(200_000)}}
    ),
    "integer-digits-4MiB": lambda obj, raw: b"1" * (4 * MIB),
    "float-digits-4MiB": lambda obj, raw: b"0." + b"1" * (4 * MIB),
    "whitespace-4MiB": lambda obj, raw: b" " * (4 * MIB) + raw,
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", TARGETS)
def test_deep_large_and_odd_json_is_a_clean_error(case, capfd, request, target, shape):
    _each_command(case, target, f"shape:{shape}", capfd, request, SHAPES[shape])


# ---------------------------------------------------------------- not a regular file


def _link_to(target):
    return lambda path: path.symlink_to(target)


def _loop_of_two(path: Path) -> list[Path]:
    other = path.with_name(path.name + ".b")
    path.symlink_to(other.name)
    other.symlink_to(path.name)
    return [other]


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "x.json").write_text("{}")


# name -> (how to make it, the commands that meet it). The real /etc/passwd is linked
# only for the commands that never write (this may run as root); a copy stands in for train.
SPECIAL = {
    "link-to-etc-passwd": (lambda p: _link_to("/etc/passwd"), ("generate", "eval")),
    "link-to-outside-file": (lambda p: _link_to(p.outside / "passwd"), COMMANDS),
    "link-to-folder": (lambda p: _link_to(p.outside / "folder"), COMMANDS),
    "link-to-dev-zero": (lambda p: _link_to("/dev/zero"), COMMANDS),
    "link-to-itself": (lambda p: lambda path: path.symlink_to(path.name), COMMANDS),
    "link-dangling": (lambda p: _link_to(p.outside / "nothing-here"), COMMANDS),
    "link-loop-of-two": (lambda p: _loop_of_two, COMMANDS),
    "folder": (lambda p: _folder, COMMANDS),
    "deleted": (lambda p: lambda path: None, COMMANDS),
}


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("target", FILES)
def test_a_link_or_folder_in_place_of_a_file_is_a_clean_error(
    pristine, case, capfd, request, target, kind
):
    make, commands = SPECIAL[kind]
    for command in commands:
        c = case(target)
        c.replace(make(pristine))
        check_case(c, command, f"special:{kind}", capfd, request)
        c.close()


# A child process runs the three commands on one run directory and reports each one's
# exit status and stderr (the descriptor, so that anything written there is seen).
CHILD = r"""
import json, os, sys, tempfile
from rnnlab import cli
results = []
for argv in json.loads(sys.argv[1]):
    print("running", argv[0], flush=True)
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            status = cli.main(argv)
        except SystemExit as e:
            status = e.code
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        results.append([argv[0], status, f.read().decode("utf-8", "replace")])
print(json.dumps(results))
"""
PIPE_TIMEOUT = 60  # seconds for the three commands, which take a few together


@pytest.mark.parametrize("target", FILES)
def test_a_named_pipe_in_place_of_a_file_does_not_hang(case, request, target):
    c = case(target)
    c.replace(os.mkfifo)
    commands = [argv(command, c.run) for command in COMMANDS]
    CASES[(target, "special:named-pipe")] += len(commands)
    COMMANDS_RUN.update(COMMANDS)
    try:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(commands)],
            capture_output=True,
            text=True,
            env=COMMAND_ENV,
            timeout=PIPE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung on a named pipe as {target} (after: {e.stdout!r})")
    assert child.returncode == 0, child.stderr
    statuses = {}
    for command, status, err in json.loads(child.stdout.splitlines()[-1]):
        STATUSES[(f"{command} (child)", status)] += 1
        check_stderr(status, err)
        statuses[command] = status
    if statuses["train"] != 0:  # else the resume went on: the run is no longer the pristine one
        c.undo()
        assert changed(c.pristine.snapshot, snapshot(c.run)) == []
    trained.load_run(c.run)
