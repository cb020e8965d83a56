"""What the commands that write a file the user names (export, inspect --html, bench --out)
may replace: a regular file, or the regular file a link leads to; never a device, a named
pipe or a run directory's own files; and a model with its vocabulary as one unit.

Each command runs through ``cli.main`` in this process; a refusal is exit status 2 with one
line on stderr, and whatever was at the path is as it was.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rnnlab import files
from rnnlab.cli import main
from rnnlab.trained import load_run

TINY = "--max-tokens 2000 --hidden 8 --batch-size 4 --num-steps 5 --epochs 2 --quiet".split()
TINY += ["--device", "cpu", "--impl", "scratch", "--threads", "1"]
EXPORT = ["--format", "torchscript"]

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run of two epochs (two checkpoints, a best one), trained once for the module."""
    path = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "timemachine", "--out", str(path), *TINY]) == 0
    return path


def refused(capsys, argv: list[str], *words: str) -> str:
    """The command exits 2 with one line 'rnnlab: error: ...' naming ``words``."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    return err[0]


def kind(path: Path) -> int:
    return stat.S_IFMT(os.lstat(path).st_mode)


def character_device(path: Path) -> Path:
    """A character device node like /dev/null (1, 3) at ``path`` (root only)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip(
            "making a device node needs root (CI runs as root); the named pipe tests cover the rule"
        )
    return path


# ---------------------------------------------------------------- not a regular file


@pytest.mark.parametrize("make", ["fifo", "device", "link-to-fifo"])
def test_export_refuses_a_target_that_is_not_a_regular_file(run, tmp_path, capsys, make):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = {
        "fifo": lambda: fifo,
        "device": lambda: character_device(tmp_path / "null"),
        "link-to-fifo": lambda: (tmp_path / "link").symlink_to(fifo) or tmp_path / "link",
    }[make]()
    before = kind(target)
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(target)], str(target), "regular")
    assert kind(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"fifo", target.name}), (
        "nothing is written beside it (no .vocab.json, no temporary file)"
    )


def test_export_refuses_when_the_vocabulary_file_would_replace_a_pipe(run, tmp_path, capsys):
    os.mkfifo(tmp_path / "m.pt.vocab.json")
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(tmp_path / "m.pt")], "named pipe")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt.vocab.json"]
    assert stat.S_ISFIFO(os.lstat(tmp_path / "m.pt.vocab.json").st_mode)


def test_inspect_refuses_a_named_pipe(run, tmp_path, capsys):
    os.mkfifo(tmp_path / "page.html")
    refused(capsys, ["inspect", str(run), "--html", str(tmp_path / "page.html")], "named pipe")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "page.html").st_mode)


def test_bench_refuses_a_named_pipe_before_it_times_anything(tmp_path, capsys):
    os.mkfifo(tmp_path / "rows.json")
    refused(
        capsys,
        ["bench", "--device", "cpu", "--batches", "1", "--out", str(tmp_path / "rows.json")],
        "named pipe",
    )
    assert stat.S_ISFIFO(os.lstat(tmp_path / "rows.json").st_mode)


def test_export_through_a_link_writes_the_file_it_leads_to(run, tmp_path, capsys):
    real = tmp_path / "models" / "m.pt"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "m.pt"
    link.symlink_to(real)
    assert main(["export", str(run), *EXPORT, "--out", str(link)]) == 0
    assert link.is_symlink() and real.stat().st_size > 1000
    assert (tmp_path / "m.pt.vocab.json").is_file()


def test_a_write_inside_a_folder_of_rnnlab_replaces_a_link_not_its_target(tmp_path):
    """In rnnlab's own folders (a run directory) a link is an entry to replace: writing
    through it could change any file on the machine."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep")
    (tmp_path / "metrics.jsonl").symlink_to(outside)
    files.atomic_write(tmp_path / "metrics.jsonl", b"new")
    assert outside.read_bytes() == b"keep"
    assert not (tmp_path / "metrics.jsonl").is_symlink()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b"new"


def test_atomic_write_refuses_a_pipe_and_a_folder_in_its_own_folders(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name in ("fifo", "folder"):
        with pytest.raises(files.NotRegularFile, match="not a regular file"):
            files.atomic_write(tmp_path / name, b"x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert (tmp_path / "folder").is_dir()


# ---------------------------------------------------------------- a run's own files


def checkpoint_file(run: Path, series: str) -> Path:
    folder = sorted((run / series).iterdir())[-1]
    return folder / "model.safetensors"


@pytest.mark.parametrize("series", ["checkpoints", "best"])
@pytest.mark.parametrize("spelling", ["plain", "dotdot", "link"])
def test_export_refuses_a_checkpoint_file_however_it_is_spelled(
    run, tmp_path, capsys, series, spelling
):
    target = checkpoint_file(run, series)
    before = target.read_bytes()
    if spelling == "dotdot":
        target = run / series / ".." / series / target.parent.name / target.name
    elif spelling == "link":
        (tmp_path / "here").symlink_to(target.parent)
        target = tmp_path / "here" / target.name
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(target)], "run directory")
    assert checkpoint_file(run, series).read_bytes() == before
    assert not any(p.name.endswith(".vocab.json") for p in (run / series).rglob("*"))
    load_run(run, "cpu", "best" if series == "best" else "latest")  # still whole


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "best.json", "metrics.jsonl"])
def test_export_refuses_the_runs_top_level_files(run, capsys, name):
    before = (run / name).read_bytes()
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(run / name)], name)
    assert (run / name).read_bytes() == before


def test_export_refuses_the_files_of_another_run_too(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "timemachine", "--out", str(other), *TINY, "--epochs", "1"]) == 0
    target = checkpoint_file(other, "checkpoints")
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(target)], str(other))


def test_inspect_refuses_a_file_of_a_checkpoint(run, capsys):
    target = checkpoint_file(run, "best").with_name("trainer.json")
    before = target.read_bytes()
    refused(capsys, ["inspect", str(run), "--html", str(target)], "run directory")
    assert target.read_bytes() == before


def test_a_new_file_at_the_top_of_a_run_is_allowed(run, capsys):
    out = run / "model.pt"
    try:
        assert main(["export", str(run), *EXPORT, "--out", str(out)]) == 0
    finally:
        out.unlink(missing_ok=True)
        files_beside = run / "model.pt.vocab.json"
        files_beside.unlink(missing_ok=True)


# ---------------------------------------------------------------- a model and its vocabulary


def exported_pair(run: Path, out: Path) -> tuple[bytes, bytes]:
    assert main(["export", str(run), *EXPORT, "--out", str(out)]) == 0
    return out.read_bytes(), (out.parent / (out.name + ".vocab.json")).read_bytes()


def test_a_failed_reexport_keeps_the_previous_model_and_vocabulary(
    run, tmp_path, capsys, monkeypatch
):
    """The vocabulary's rename fails (as for an immutable file): the model already renamed
    gets its previous contents back."""
    out = tmp_path / "m.pt"
    assert main(["export", str(run), *EXPORT, "--out", str(out), "--checkpoint", "latest"]) == 0
    before = out.read_bytes(), (tmp_path / "m.pt.vocab.json").read_bytes()
    real_replace = os.replace

    def vocab_immutable(src, dst, **kwargs):
        if str(dst).endswith(".vocab.json"):
            raise PermissionError(1, "Operation not permitted")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", vocab_immutable)
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(out)], "not permitted")
    monkeypatch.undo()
    assert (out.read_bytes(), (tmp_path / "m.pt.vocab.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.vocab.json"]


def test_a_full_disk_during_a_reexport_keeps_both_files(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.pt"
    before = exported_pair(run, out)
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return FullDisk(f) if "vocab" in os.readlink(f"/proc/self/fd/{fd}") else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(out)], "No space left")
    monkeypatch.undo()
    assert (out.read_bytes(), (tmp_path / "m.pt.vocab.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.vocab.json"]


def test_atomic_write_all_undoes_the_renames_before_a_failed_one(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"old a")
    real_replace = os.replace

    def fail_at_c(src, dst, **kwargs):
        if Path(dst).name == "c":
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", fail_at_c)
    with pytest.raises(OSError):
        files.atomic_write_all([(tmp_path / n, b"new " + n.encode()) for n in ("a", "b", "c")])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # b had no file before: gone
    assert (tmp_path / "a").read_bytes() == b"old a"
    files.atomic_write_all([(tmp_path / n, n.encode()) for n in ("a", "b")])
    assert [(tmp_path / n).read_bytes() for n in ("a", "b")] == [b"a", b"b"]


def test_a_d2l_figure_refuses_a_named_pipe_and_writes_through_a_link(tmp_path):
    from rnnlab import d2l_plot

    fig, _ = d2l_plot.new_figure()
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(files.NotRegularFile):
        d2l_plot.save_figure(fig, tmp_path / "fifo.png")
    (tmp_path / "real.png").write_bytes(b"")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    d2l_plot.save_figure(fig, tmp_path / "link.png")
    assert (tmp_path / "link.png").is_symlink()
    assert (tmp_path / "real.png").read_bytes().startswith(b"\x89PNG")
