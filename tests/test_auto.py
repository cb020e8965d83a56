"""--recipe auto: the choice from the measured table, fitted to the text and the machine."""

from __future__ import annotations

import json

import pytest

from conftest import check_clean_error, run_cli
from rnnlab import auto, cli
from rnnlab.config import TrainConfig
from rnnlab.errors import RnnlabError

pytestmark = pytest.mark.usefixtures("one_thread")


def ranked(*pairs, speed=10_000):
    return [{"candidate": c, "loss": loss, "tokens_per_s": speed} for c, loss in pairs]


# A small table of the shipped form: two character texts, one word text.
TABLE = auto.Table(
    texts={
        "small": {"kind": "chars", "train_tokens": 150_000, "vocab": 60},
        "large": {"kind": "chars", "train_tokens": 1_000_000, "vocab": 65},
        "words": {"kind": "words", "train_tokens": 900_000, "vocab": 10_000},
    },
    cells=[
        auto.Cell("small", 2.0, 40_000, ranked(("lstm-1x256", 1.6), ("shakespeare", 1.7))),
        auto.Cell("small", 15.0, 40_000, ranked(("shakespeare", 1.4), ("lstm-1x256", 1.5))),
        auto.Cell("large", 2.0, 40_000, ranked(("shakespeare-quick", 1.6))),
        auto.Cell("large", 15.0, 40_000, ranked(("lstm-2x384", 1.45))),
        auto.Cell("words", 5.0, 40_000, ranked(("ptb-small", 5.0))),
    ],
)


def test_the_nearest_text_and_budget_give_the_candidate():
    small = auto.choose("chars", 120_000, 70, 2.0, 40_000, TABLE)
    assert small.options["hidden"] == 256 and small.options["time_limit"] == 2.0
    large_long = auto.choose("chars", 2_000_000, 90, 20.0, 40_000, TABLE)
    assert large_long.options["hidden"] == 384 and large_long.options["layers"] == 2
    assert "large" in large_long.why and "15 minute(s)" in large_long.why
    words = auto.choose("words", 50_000, 5_000, 1.0, 40_000, TABLE)
    assert words.options["tie_weights"] and words.options["optimizer"] == "sgd"


def test_a_slower_machine_buys_the_shorter_budget_s_choice():
    """15 minutes at a quarter of the table's speed are worth 3.75 of its minutes: the
    2-minute choice is nearer than the 15-minute one (on a log scale)."""
    fast = auto.choose("chars", 150_000, 60, 15.0, 40_000, TABLE)
    slow = auto.choose("chars", 150_000, 60, 15.0, 5_000, TABLE)
    assert fast.options["layers"] == 2 and fast.options["hidden"] == 512  # shakespeare
    assert slow.options["hidden"] == 256  # lstm-1x256, the 2-minute cell's best
    assert "worth 1.88 of the table's" in slow.why, slow.why


def test_where_a_shorter_budget_did_better_auto_trains_that_and_stops_sooner():
    """A small text overfits in a long run: its 2-minute cell beat its 15-minute one. 15
    minutes at the table's speed then train the 2-minute best for 2 minutes; at twice its
    speed (worth 30 of the table's minutes, nearest 15) for 1 minute."""
    table = auto.Table(
        {"tiny": {"kind": "chars", "train_tokens": 150_000, "vocab": 60}},
        [
            auto.Cell("tiny", 2.0, 40_000, ranked(("lstm-2x384", 1.47), ("lstm-1x256", 1.5))),
            auto.Cell("tiny", 5.0, 40_000, ranked(("lstm-1x256", 1.52))),
            auto.Cell("tiny", 15.0, 40_000, ranked(("shakespeare", 1.49))),
        ],
    )
    same = auto.choose("chars", 150_000, 60, 15.0, 40_000, table)
    assert same.options["hidden"] == 384 and same.options["time_limit"] == 2.0
    assert "its 2-minute budget did better, lstm-2x384 1.470" in same.why, same.why
    assert "trains for the 2 of your 15 minute(s)" in same.why
    fast = auto.choose("chars", 150_000, 60, 15.0, 80_000, table)
    assert fast.options["time_limit"] == 1.0 and fast.options["hidden"] == 384
    better_long = auto.Table(table.texts, [*table.cells[:2], auto.Cell("tiny", 15.0, 40_000,
                             ranked(("shakespeare", 1.46)))])  # fmt: skip
    kept = auto.choose("chars", 150_000, 60, 15.0, 40_000, better_long)
    assert kept.options["hidden"] == 512 and kept.options["time_limit"] == 15.0
    assert "did better" not in kept.why


def test_the_run_gets_auto_s_time_limit_converted_by_the_candidate_s_own_speed(
    monkeypatch, tmp_path
):
    """options_for_text times the chosen candidate: at the table's own speed for it, 15
    minutes train the 2-minute best for 2 minutes (not the 15 given); where the candidate
    runs at half its speed in the table, though the reference runs as fast as ever, 15
    minutes are worth 7.5, nearest the 5-minute cell, whose shorter 2-minute cell did
    better: 2 / 7.5 of the 15 minutes, 4."""
    table = auto.Table(
        {"tiny": {"kind": "chars", "train_tokens": 150_000, "vocab": 60}},
        [
            auto.Cell("tiny", 2.0, 40_000, ranked(("lstm-2x384", 1.47))),
            auto.Cell("tiny", 5.0, 40_000, ranked(("lstm-1x256", 1.52))),
            auto.Cell("tiny", 15.0, 40_000, ranked(("shakespeare", 1.49))),
        ],
    )
    text = tmp_path / "text.txt"
    text.write_text("the time traveller spoke to us. " * 2_000, encoding="utf-8")
    monkeypatch.setattr(auto, "load_table", lambda raw=None: table)
    monkeypatch.setattr(auto, "reference_speed", lambda seconds=3.0: 40_000.0)
    for candidate_speed, limit in ((10_000.0, 2.0), (5_000.0, 4.0)):
        monkeypatch.setattr(auto, "candidate_speed", lambda *a, s=candidate_speed: s)
        choice = auto.options_for_text({"source": str(text), "time_limit": 15.0})
        # approx: the text's 15 or so characters make a step a little cheaper than the table's 60
        assert choice.options["time_limit"] == pytest.approx(limit, rel=0.05)
        assert choice.options["hidden"] == 384
        assert f"trains lstm-2x384 at {candidate_speed:,.0f} tokens/s now" in choice.why


def test_each_budget_s_minutes_are_converted_by_the_candidate_s_own_run_there(monkeypatch):
    """The cells come from different days, and the reference's readings need not follow a
    word model's speed: here the 30-minute cell's reference read 2.2 times the 15-minute
    cell's, while words-1x200 ran only 1.4 times as fast. words-1x200 timed at 7,000
    tokens/s: by the reference (converted through the 15-minute run), 30 minutes are worth
    27.1 of the 15-minute cell's minutes and 12.3 of the 30-minute cell's (nearest: 15); by
    words-1x200's own run in each cell, 19.4 of the 30-minute cell's (nearest: 30)."""
    table = auto.Table(
        {"words": TABLE.texts["words"]},
        [
            auto.Cell("words", 15.0, 50_000, [
                {"candidate": "words-1x200", "loss": 4.64, "tokens_per_s": 7_750}]),
            auto.Cell("words", 30.0, 110_000, [
                {"candidate": "ptb-bf16", "loss": 4.45, "tokens_per_s": 17_000},
                {"candidate": "words-1x200", "loss": 4.52, "tokens_per_s": 10_800}]),
        ],
    )  # fmt: skip
    monkeypatch.setattr(auto, "fast_bfloat16", lambda: True)
    speed = 50_000 * 7_000 / 7_750  # as options_for_text converts it by the 15-minute cell
    choice = auto.choose("words", 900_000, 10_000, 30.0, speed, table, ("words-1x200", 7_000))
    assert choice.cell.minutes == 30.0 and choice.options["precision"] == "bfloat16"
    assert "against 10,800 in its run of the table's 30-minute budget" in choice.why, choice.why
    assert "worth 19.4 of the table's" in choice.why
    assert choice.options["time_limit"] == 30.0
    by_reference = auto.choose("words", 900_000, 10_000, 30.0, speed, table)
    assert by_reference.cell.minutes == 15.0 and "worth 27.1" in by_reference.why


def test_a_candidate_s_timing_is_compared_with_the_same_timing_taken_before_its_run():
    """The sweep times each candidate's step as auto does and stores it in the row: the
    step alone runs faster than a run (here 1.25 times). Timed at 9,000 tokens/s against
    the row's step of 9,000, 20 minutes are worth 20 of the table's, nearest 15; against
    the run's 7,200 (a row without the step's timing) they would be worth 25, nearest 30.
    The speed the run is expected to train at is the run's, scaled (7,200), not the step's."""

    def table(**step) -> auto.Table:
        run = {"candidate": "words-1x200", "loss": 4.6, "tokens_per_s": 7_200, **step}
        cells = [auto.Cell("words", 15.0, 50_000, [run]),
                 auto.Cell("words", 30.0, 50_000, [{**run, "loss": 4.5}])]  # fmt: skip
        return auto.Table({"words": TABLE.texts["words"]}, cells)

    timed = ("words-1x200", 9_000.0)
    choice = auto.choose(
        "words", 900_000, 10_000, 20.0, 50_000, table(step_tokens_per_s=9_000), timed
    )
    assert choice.cell.minutes == 15.0 and "worth 20 of the table's" in choice.why, choice.why
    assert "against 9,000 timed the same way before its run of the table's 15-minute" in (
        choice.why
    )
    assert "at about 7,200 tokens/s" in choice.why
    by_run = auto.choose("words", 900_000, 10_000, 20.0, 50_000, table(), timed)
    assert by_run.cell.minutes == 30.0 and "worth 25 of the table's" in by_run.why, by_run.why
    assert "against 7,200 in its run of the table's 30-minute" in by_run.why


@pytest.mark.parametrize("fast", [True, False])
def test_a_bfloat16_candidate_is_chosen_only_where_the_cpu_multiplies_bfloat16(monkeypatch, fast):
    table = auto.Table(
        {"words": TABLE.texts["words"]},
        [auto.Cell("words", 30.0, 40_000, ranked(("ptb-bf16", 4.47), ("words-1x200", 4.5)))],
    )
    monkeypatch.setattr(auto, "fast_bfloat16", lambda: fast)
    choice = auto.choose("words", 900_000, 10_000, 30.0, 40_000, table)
    assert (choice.options.get("precision") == "bfloat16") is fast
    assert choice.options["hidden"] == (256 if fast else 200)
    assert ("ptb-bf16 left out" in choice.why) is not fast, choice.why
    only_bf16 = auto.Table(table.texts, [auto.Cell("words", 30.0, 40_000,
                           ranked(("ptb-bf16", 4.47)))])  # fmt: skip
    if fast:
        chosen = auto.choose("words", 900_000, 10_000, 30.0, 40_000, only_bf16)
        assert chosen.options["precision"] == "bfloat16"
    else:
        with pytest.raises(RnnlabError, match="candidate that runs here .ptb-bf16"):
            auto.choose("words", 900_000, 10_000, 30.0, 40_000, only_bf16)


def test_the_cpu_check_for_bfloat16_answers_without_error():
    assert isinstance(auto.fast_bfloat16(), bool)


@pytest.mark.parametrize(
    "kind, name", [("chars", "lstm-1x256"), ("words", "words-1x200"), ("words", "ptb-bf16")]
)
def test_a_candidate_s_speed_is_timed_on_its_own_model(kind, name):
    assert auto.candidate_speed(auto.CANDIDATES[kind][name], 500, seconds=0.2) > 0


def test_a_small_text_gets_smaller_batches_not_an_error():
    options = auto.CANDIDATES["chars"]["shakespeare"]  # batch 32 x 64
    fitted = auto.fit_batch(options, 20_000)  # 9 batches an epoch at 32 x 64
    assert (fitted["batch_size"], fitted["num_steps"]) == (8, 64)
    assert (20_000 - 1) // (8 * 64) >= auto.MIN_EPOCH_BATCHES
    tiny = auto.fit_batch(options, 600)
    assert tiny["batch_size"] == 1 and tiny["num_steps"] == 16  # 37 batches of 1 x 16
    with pytest.raises(RnnlabError, match="too few for one batch"):
        auto.fit_batch(options, 10)
    kept = auto.choose("chars", 40_000, 40, 2.0, 40_000, TABLE)  # 39 batches of 16 x 64
    assert kept.options["batch_size"] == 16 and "made smaller" not in kept.why
    made = auto.choose("chars", 20_000, 40, 2.0, 40_000, TABLE)
    assert made.options["batch_size"] == 8 and "made smaller from 16 x 64" in made.why


def test_every_choice_is_a_valid_configuration():
    for kind, candidates in auto.CANDIDATES.items():
        for options in candidates.values():
            TrainConfig.from_options({"mode": kind, **options, "time_limit": 1.0})


def test_a_kind_the_table_lacks_is_a_clean_error():
    only_chars = auto.Table(TABLE.texts, [c for c in TABLE.cells if c.text != "words"])
    with pytest.raises(RnnlabError, match="no measured words candidate"):
        auto.choose("words", 1000, 100, 5.0, 40_000, only_chars)


def test_the_shipped_table_reads_and_names_known_candidates():
    table = auto.load_table()
    for cell in table.cells:
        kind = table.texts[cell.text]["kind"]
        assert {r["candidate"] for r in cell.ranking} <= set(auto.CANDIDATES[kind])
        losses = [r["loss"] for r in cell.ranking]
        assert losses == sorted(losses)


def test_the_reference_speed_is_a_positive_rate():
    assert auto.reference_speed(0.2) > 0


@pytest.mark.slow
def test_auto_without_a_time_limit_is_a_one_line_error(tmp_path):
    result = run_cli("train", "timemachine", "--recipe", "auto", "--out", tmp_path / "r")
    check_clean_error(result, "--recipe auto", "--time-limit")
    assert not (tmp_path / "r").exists()


def test_auto_trains_what_it_chose_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(auto, "load_table", lambda raw=None: TABLE)
    monkeypatch.setattr(auto, "reference_speed", lambda seconds=3.0: 40_000.0)
    run = tmp_path / "run"
    status = cli.main(["train", "timemachine", "--max-tokens", "3000", "--recipe", "auto",
                       "--time-limit", "0.02", "--threads", "1", "--out", str(run)])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("--recipe auto: the text has 2,700 training chars")
    config = json.loads((run / "config.json").read_text())
    # The small text's 2-minute choice (lstm-1x256), its batch fitted to 2,700 tokens.
    model = config["model"]
    assert (model["hidden"], model["layers"], config["mode"]) == (256, 1, "chars")
    assert config["batch_size"] * config["num_steps"] * auto.MIN_EPOCH_BATCHES <= 2700
    assert config["time_limit"] == 0.02


def test_options_given_on_the_line_win_over_auto(monkeypatch):
    monkeypatch.setattr(auto, "load_table", lambda raw=None: TABLE)
    monkeypatch.setattr(auto, "reference_speed", lambda seconds=3.0: 40_000.0)
    given = {"source": "timemachine", "time_limit": 2.0, "hidden": 100}
    choice = auto.options_for_text(given)
    assert choice.options["hidden"] == 100 and choice.options["cell"] == "lstm"
    with pytest.raises(RnnlabError, match="--mode chars or --mode words"):
        auto.options_for_text({**given, "mode": "letters"})


def test_a_larger_vocabulary_buys_less_in_the_same_minutes():
    """A step over 2,600 symbols costs about 2.9 times one over 60 (the reference model's
    output layer): 15 minutes are then worth about 5.2 of the table's, nearer 2 than 15."""
    same = auto.choose("chars", 150_000, 60, 15.0, 40_000, TABLE)
    large = auto.choose("chars", 150_000, 2_600, 15.0, 40_000, TABLE)
    assert same.options["layers"] == 2 and "as costly" not in same.why
    assert large.options["hidden"] == 256 and "2.9 times as costly" in large.why, large.why
    ref = {"cell": "lstm", "layers": 1, **auto.REFERENCE}
    assert auto.token_cost(ref, 60) == 4 * 256 * (256 + 64) + 256 * 60
