"""The run directory: atomic writes, exact save/load, verification of every file."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import save_run_state
from rnnlab import checkpoint, files, rundir, trained
from rnnlab.batches import eval_batches
from rnnlab.config import ModelConfig, TrainConfig
from rnnlab.data import prepare
from rnnlab.errors import RnnlabError
from rnnlab.models import build_model
from rnnlab.schedule import ScheduleState
from rnnlab.train import EpochProgress, NonFiniteError, evaluate, make_optimizer, train_step
from rnnlab.vocab import Vocab

V = 6


pytestmark = pytest.mark.usefixtures("one_thread")


def make_run(tmp_path, cell="lstm", optimizer="adam", impl="torch"):
    """A run directory with one checkpoint taken after two Adam steps, mid-epoch."""
    torch.manual_seed(0)
    cfg = TrainConfig(
        model=ModelConfig(impl=impl, cell=cell, hidden=8, layers=2),
        batch_size=3,
        num_steps=4,
        optimizer=optimizer,
        lr=0.01,
    )
    vocab = Vocab(list("abcde"))
    run = tmp_path / "run"
    rundir.create(run, cfg, vocab)
    model = build_model(cfg.model, V)
    opt = make_optimizer(optimizer, model.parameters(), 0.01)
    state = model.begin_state(3)
    X = torch.randint(0, V, (3, 4))
    for _ in range(2):
        _, _, state = train_step(model, opt, X, X, state, 1.0)
    progress = EpochProgress(
        batch=2,
        loss_sum=1 / 3,
        tokens=24,
        seconds=0.1,
        state=state,
        last_finite_loss=1.2345678901234567,
    )
    history = [{"epoch": 1, "train_ppl": 3.5, "val_ppl": 4.25}]
    save_run_state(run, model, opt, 1, progress, history, cfg)
    return run, cfg, model, opt, progress, history


def test_save_then_load_restores_everything_exactly(tmp_path):
    run, cfg, model, opt, progress, history = make_run(tmp_path)
    rng = torch.get_rng_state()
    ckpt = checkpoint.read_checkpoint(run)
    assert (ckpt.epoch, ckpt.generation, ckpt.history) == (1, 1, history)
    p = ckpt.progress
    assert (p.batch, p.loss_sum, p.tokens, p.last_finite_loss) == (2, 1 / 3, 24, 1.2345678901234567)
    assert all(torch.equal(a, b) for a, b in zip(p.state, progress.state))
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt.weights[key], value)
    assert torch.equal(ckpt.rng["rng.torch"], rng)
    fresh = build_model(cfg.model, V)
    fresh_opt = make_optimizer("adam", fresh.parameters(), 0.01)
    fresh_opt.load_state_dict(ckpt.optimizer)
    for a, b in zip(fresh_opt.state_dict()["state"].values(), opt.state_dict()["state"].values()):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    cfg2, vocab, loaded, _ = trained.load_run(run)
    assert cfg2 == cfg and len(vocab) == V
    assert (run / "model.safetensors").read_bytes() == (
        run / checkpoint.read_pointer(run)["current"] / "model.safetensors"
    ).read_bytes()


def test_tied_weights_save_and_load(tmp_path):
    cfg = TrainConfig(model=ModelConfig(impl="torch", hidden=8, embedding=8, tie_weights=True))
    run = tmp_path / "run"
    rundir.create(run, cfg, Vocab(list("abcde")))
    model = build_model(cfg.model, V)
    opt = make_optimizer("sgd", model.parameters(), 1.0)
    save_run_state(run, model, opt, 1, EpochProgress(), [], cfg)
    _, _, loaded, _ = trained.load_run(run)
    assert loaded.linear.weight is loaded.embedding.weight
    assert torch.equal(loaded.embedding.weight, model.embedding.weight)


def test_a_new_checkpoint_replaces_the_old_one_and_keeps_the_previous(tmp_path):
    """The previous checkpoint stays for readers that read the pointer just before."""
    run, cfg, model, opt, progress, history = make_run(tmp_path, "gru", "sgd", "scratch")
    for generation in (2, 3):
        save_run_state(run, model, opt, 2, EpochProgress(), history, cfg)
        assert checkpoint.read_checkpoint(run).generation == generation
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["gen-000002", "gen-000003"]


@pytest.mark.parametrize(
    "name", ["manifest.json", "model.safetensors", "trainer.safetensors", "trainer.json"]
)
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_files_are_reported_with_what_to_do(tmp_path, name, damage):
    run = make_run(tmp_path)[0]
    path = run / checkpoint.read_pointer(run)["current"] / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x04
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:-1]))
    else:
        path.unlink()
    with pytest.raises(RnnlabError) as info:
        trained.load_run(run)
    message = str(info.value)
    assert name in message and ("train again" in message or "restore" in message)


def test_missing_pointer_is_recovered_and_no_folder_means_no_checkpoint(tmp_path):
    run = make_run(tmp_path)[0]
    (run / "checkpoint.json").unlink()
    assert trained.load_run(run)[3].generation == 1  # the newest complete one
    assert not (run / "checkpoint.json").exists()  # reading a run writes nothing
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(RnnlabError, match="no checkpoint"):
        trained.load_run(run)


def test_vocabulary_of_another_run_is_refused(tmp_path):
    run = make_run(tmp_path)[0]
    (run / "vocab.json").write_text(Vocab(list("abcdf")).to_json())
    with pytest.raises(RnnlabError, match="vocabulary"):
        trained.load_run(run)


def test_edited_config_disagreeing_with_the_weights_is_refused(tmp_path):
    run = make_run(tmp_path)[0]
    data = json.loads((run / "config.json").read_text())
    data["model"]["hidden"] = 16
    (run / "config.json").write_text(json.dumps(data))
    with pytest.raises(RnnlabError, match="hidden"):
        trained.load_run(run)


def test_crash_before_the_switch_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run, cfg, model, opt, progress, history = make_run(tmp_path)
    real = files.atomic_write

    def dies_at_manifest(path, data):
        if path.name == "manifest.json":
            raise KeyboardInterrupt  # stands for a kill between two files of one checkpoint
        real(path, data)

    monkeypatch.setattr(files, "atomic_write", dies_at_manifest)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_run_state(run, model, opt, 3, EpochProgress(), history, cfg)
    monkeypatch.setattr(files, "atomic_write", real)
    ckpt = checkpoint.read_checkpoint(run)
    assert (ckpt.generation, ckpt.epoch, ckpt.progress.batch) == (1, 1, 2)
    # the next save is numbered past the half-written folder, and cleans it up
    assert save_run_state(run, model, opt, 3, EpochProgress(), history, cfg) == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["gen-000001", "gen-000003"]


def test_full_disk_is_a_clear_error_that_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run, cfg, model, opt, progress, history = make_run(tmp_path)

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(RnnlabError, match="No space left.*previous checkpoint.*--resume"):
        save_run_state(run, model, opt, 3, EpochProgress(), history, cfg)
    monkeypatch.undo()
    assert checkpoint.read_checkpoint(run).generation == 1


def test_non_finite_weights_are_never_saved(tmp_path):
    run, cfg, model, opt, progress, history = make_run(tmp_path)
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(NonFiniteError, match="previous checkpoint is kept"):
        save_run_state(run, model, opt, 3, EpochProgress(), history, cfg)
    assert checkpoint.read_checkpoint(run).generation == 1


def test_metrics_and_plot_are_rewritten_from_the_history(tmp_path):
    history = [
        {"epoch": 1, "train_ppl": 2.0, "val_ppl": 2.5},
        {"epoch": 2, "train_ppl": 1.5, "val_ppl": 2.25},
    ]
    rundir.write_metrics(tmp_path, history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    assert (tmp_path / "perplexity.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_directory_written_by_rnnlm_0_1_still_loads():
    """tests/data/run-rnnlm-0.1.0 was written by rnnlm 0.1.0 (a 2-epoch GRU, 8 units)."""
    old = Path(__file__).parent / "data" / "run-rnnlm-0.1.0"
    cfg, vocab, model, ckpt = trained.load_run(old)
    assert cfg.model == ModelConfig(cell="gru", impl="scratch", hidden=8)
    assert (ckpt.epoch, len(vocab)) == (2, 27)
    # What `rnnlm eval --json` printed for this run when it was written:
    # {"ppl": 18.035186337833856, ..., "loss": 2.8923246463139853, "tokens": 192}
    data = prepare(
        cfg.source,
        cfg.mode,
        cfg.max_tokens,
        cfg.val_frac,
        cfg.batch_size,
        cfg.num_steps,
        vocab=vocab,
    )
    X, Y = eval_batches(data.val_ids, cfg.batch_size, cfg.num_steps)
    assert Y.numel() == 192
    assert evaluate(model, X, Y) == pytest.approx(2.8923246463139853, rel=1e-6)


def test_a_best_checkpoint_is_a_second_series_beside_the_latest(tmp_path):
    run, cfg, model, opt, progress, history = make_run(tmp_path)
    assert trained.load_run(run, which="best")[3].which == "latest"  # none yet: the latest
    clock = ScheduleState(lr=0.01, batches=7, seconds=1.5, best_loss=1.0, best_epoch=2)
    for epoch in (2, 3, 4):
        save_run_state(run, model, opt, epoch, EpochProgress(), history, cfg, clock,
                                   best=epoch != 3)  # fmt: skip
    best = checkpoint.read_checkpoint(run, slot=checkpoint.BEST)
    latest = checkpoint.read_checkpoint(run)
    assert (best.which, best.epoch, best.generation) == ("best", 4, 2)
    assert (latest.epoch, latest.generation, latest.schedule) == (4, 4, clock)
    assert json.loads((run / "best.json").read_text())["current"] == "best/gen-000002"
    assert sorted(p.name for p in (run / "best").iterdir()) == ["gen-000001", "gen-000002"]
    cfg2, _, loaded, ckpt = trained.load_run(run, which="best")
    assert ckpt.which == "best" and cfg2 == cfg
    for key, value in model.state_dict().items():
        assert torch.equal(best.weights[key], value) and torch.equal(
            loaded.state_dict()[key], value
        )


def test_a_damaged_best_pointer_is_replaced_by_the_next_best(tmp_path):
    run, cfg, model, opt, progress, history = make_run(tmp_path)
    save_run_state(run, model, opt, 2, EpochProgress(), history, cfg, best=True)
    (run / "best.json").write_text("not json")
    with pytest.raises(RnnlabError, match="best.json.*--checkpoint latest"):
        trained.load_run(run, which="best")
    trained.load_run(run, which="latest")
    save_run_state(run, model, opt, 3, EpochProgress(), history, cfg, best=True)
    assert trained.load_run(run, which="best")[3].generation == 2


def resign(run: Path, trainer: dict) -> None:
    """Rewrite the current trainer.json with its manifest and pointer sums, as a hostile or
    badly repaired run would have them."""
    folder = run / checkpoint.read_pointer(run)["current"]
    data = checkpoint.json_bytes(trainer)
    (folder / "trainer.json").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["trainer.json"] = checkpoint.sha256(data)
    manifest_bytes = checkpoint.json_bytes(manifest)
    (folder / "manifest.json").write_bytes(manifest_bytes)
    checkpoint.write_pointer(run, manifest["generation"], manifest_bytes)


@pytest.mark.parametrize(
    "key, value",
    [
        ("lr", -1.0),
        ("lr", "0.1"),
        ("batches", 1.5),
        ("seconds", float("inf")),
        ("best_loss", [1.0]),
        ("best_epoch", 5),  # after the checkpoint's own epoch
        ("best_epoch", 0),  # a best loss with no epoch
        ("best_loss", None),  # an epoch with no best loss
    ],
)
def test_a_schedule_state_of_other_types_is_refused(tmp_path, key, value):
    run = make_run(tmp_path)[0]
    folder = run / checkpoint.read_pointer(run)["current"]
    trainer = json.loads((folder / "trainer.json").read_text())
    assert trainer["format"] == 2
    trainer["schedule"] = {**trainer["schedule"], "best_loss": 2.0, "best_epoch": 1, key: value}
    resign(run, trainer)
    with pytest.raises(RnnlabError, match="cannot read"):
        checkpoint.read_checkpoint(run)


def test_trainer_json_of_format_1_is_read_without_a_schedule(tmp_path):
    run = make_run(tmp_path)[0]
    folder = run / checkpoint.read_pointer(run)["current"]
    trainer = json.loads((folder / "trainer.json").read_text())
    del trainer["schedule"]
    resign(run, {**trainer, "format": 1})
    assert checkpoint.read_checkpoint(run).schedule is None
    resign(run, {**trainer, "format": 3})  # a later rnnlab's: refused, not misread
    with pytest.raises(RnnlabError, match="cannot read"):
        checkpoint.read_checkpoint(run)
