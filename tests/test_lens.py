"""The lens: per-token predictions and states equal the model's own forward pass, the
features of hand-made texts, the ranking of units, generation, and one-line errors."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import TINY_RUN
from rnnlab import cli, generate, lens
from rnnlab.config import ModelConfig, TrainConfig
from rnnlab.data import prepare
from rnnlab.errors import RnnlabError
from rnnlab.lens import FEATURES, MAX_GENERATE, MAX_TEXT_CHARS, Lens, Reading
from rnnlab.models import ScratchLM
from rnnlab.tokenize import detokenize, prompt_tokens
from rnnlab.vocab import Vocab

TINY = [*TINY_RUN, "--epochs", "1", "--quiet"]
# The runs read here: the book's one-hot RNN (fused) on characters, a stacked LSTM of
# torch.nn with an embedding, and a GRU with an adaptive softmax on words.
RUNS = {
    "rnn": ["--mode", "chars", "--impl", "fused"],
    "lstm": ["--cell", "lstm", "--impl", "torch", "--embedding", "8", "--layers", "2"],
    "gru-words": ["--mode", "words", "--cell", "gru", "--impl", "torch", "--adaptive-softmax"],
}
TEXTS = {
    "rnn": "The Time Traveller (for so it will be\nconvenient to speak of him) was",
    "lstm": "The Time Traveller (for so it will be convenient to speak of him)",
    "gru-words": "the time traveller for so it will be\nconvenient to speak of him",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A lens on each of RUNS, each trained for one epoch on 3,000 tokens."""
    lenses = {}
    for name, options in RUNS.items():
        out = tmp_path_factory.mktemp("lens") / name
        assert cli.main(["train", "timemachine", "--out", str(out), *TINY, *options]) == 0
        lenses[name] = Lens.from_run(out)
    return lenses


def hand_made_lens(mode: str = "chars", cell: str = "rnn") -> Lens:
    """An untrained lens over a few characters: for what needs no trained weights."""
    cfg = TrainConfig(mode=mode, model=ModelConfig(cell=cell, impl="scratch", hidden=4))
    vocab = Vocab(list("abc \n"))
    return Lens(cfg, vocab, ScratchLM(len(vocab), 4, 1, cell))


def reading_of(tokens: list[str], activations: dict[str, np.ndarray] | None = None) -> Reading:
    """A Reading of ``tokens`` made by hand (predictions made up)."""
    T = len(tokens)
    return Reading(
        tokens=tokens,
        probs=[None] + [0.5] * (T - 1),
        top=[[]] + [[("a", 0.5)]] * (T - 1),
        loss_nats=math.log(2),
        loss_bits=1.0,
        activations=activations or {"h1": np.zeros((T, 4), dtype=np.float32)},
    )


def feature_of(text: str, name: str, pattern: str | None = None) -> list[float]:
    """The feature of each character of ``text``, read as a chars-mode lens reads it."""
    return hand_made_lens().feature(reading_of(list(text)), name, pattern).tolist()


# ---------------------------------------------------------------- reading


def one_pass(lens: Lens, ids: list[int]):
    """(log-probabilities (T, V), final state) of one forward pass over ``ids``."""
    model = lens.model
    with torch.no_grad():
        scores, state = model(torch.tensor([ids]), model.begin_state(1, "cpu"))
        head = getattr(model, "adaptive", None)
        return (head.log_prob(scores) if head is not None else scores.log_softmax(-1)), state


def states_of(lens: Lens, state) -> dict[str, torch.Tensor]:
    """A model's state (L, 1, H) or (h, c) as the Reading names it: "h1": (H,), ..."""
    h, c = state if lens.cell == "lstm" else (state, None)
    named = {f"h{i + 1}": h[i, 0] for i in range(lens.layers)}
    if c is not None:
        named.update({f"c{i + 1}": c[i, 0] for i in range(lens.layers)})
    return named


@pytest.mark.parametrize("name", RUNS)
def test_reading_equals_one_forward_pass_over_the_whole_text(runs, name):
    lens = runs[name]
    text = TEXTS[name]
    reading = lens.read(text)
    ids = lens.vocab[prompt_tokens(text, lens.cfg.mode)]
    T = len(ids)
    logp, final = one_pass(lens, ids)  # teacher forcing: row t predicts token t + 1

    assert len(reading.tokens) == len(reading.probs) == len(reading.top) == T
    assert reading.probs[0] is None and reading.top[0] == []
    expected = logp[torch.arange(T - 1), torch.tensor(ids[1:])]
    np.testing.assert_allclose(reading.probs[1:], expected.exp().numpy(), rtol=1e-4, atol=1e-6)
    for t in range(1, T):
        best = torch.argsort(logp[t - 1], descending=True)[:5].tolist()
        shown = ["\n" if tok == "<eos>" else tok for tok in lens.vocab.to_tokens(best)]
        assert [tok for tok, _ in reading.top[t]] == shown
        np.testing.assert_allclose([p for _, p in reading.top[t]], logp[t - 1, best].exp(),
                                   rtol=1e-4)  # fmt: skip
    assert reading.loss_nats == pytest.approx(float(-expected.double().mean()), rel=1e-5)
    assert reading.loss_bits == pytest.approx(reading.loss_nats / math.log(2))

    kinds = ["h", "c"] if lens.cell == "lstm" else ["h"]
    assert set(reading.activations) == {f"{k}{i + 1}" for k in kinds for i in range(lens.layers)}
    for key, after_all in states_of(lens, final).items():
        assert reading.activations[key].shape == (T, lens.hidden)
        np.testing.assert_allclose(reading.activations[key][-1], after_all, atol=1e-5)
    _, part_way = one_pass(lens, ids[:7])  # the state after token 6, of every layer
    for key, after_seven in states_of(lens, part_way).items():
        np.testing.assert_allclose(reading.activations[key][6], after_seven, atol=1e-5)


def test_words_mode_shows_line_breaks_and_unknown_words_as_written(runs):
    reading = runs["gru-words"].read("the time\nzzyzx machine")
    assert reading.tokens == ["the", "time", "\n", "zzyzx", "machine"]
    assert all(0 < p <= 1 for p in reading.probs[1:])  # zzyzx: the probability of <unk>


def test_one_lens_reads_from_several_threads_alike(runs):
    lens, text = runs["lstm"], TEXTS["lstm"]
    alone = lens.read(text)
    results: list[Reading] = []
    threads = [threading.Thread(target=lambda: results.append(lens.read(text))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for reading in results:
        assert reading.probs == alone.probs
        np.testing.assert_array_equal(reading.activations["c2"], alone.activations["c2"])


# ---------------------------------------------------------------- features


def test_features_are_exactly_these():
    assert list(FEATURES) == ["quotes", "brackets", "line-position", "word-start", "regex"]
    assert all(about and "\n" not in about for about in FEATURES.values())


def test_quotes_open_at_a_mark_and_close_after_the_closing_one():
    assert feature_of('a "b" c', "quotes") == [0, 0, 1, 1, 0, 0, 0]
    # The Time Machine's single quotes, with an apostrophe inside the quotation
    text = "'Don't go,' he said."
    assert feature_of(text, "quotes") == [1] * 10 + [0] * 10  # 0 after the closing mark
    assert feature_of("we know't.", "quotes") == [0] * 10  # an apostrophe opens nothing
    assert feature_of("'Open\n\nnew", "quotes") == [1] * 6 + [0] * 4  # a paragraph ends it
    assert feature_of("“a” b", "quotes") == [1, 1, 0, 0, 0]


def test_brackets_count_any_depth_and_ignore_a_stray_closing_one():
    assert feature_of("f(a[b])c)(", "brackets") == [0, 1, 1, 1, 1, 1, 0, 0, 0, 1]


def test_line_position_counts_characters_since_the_line_break():
    assert feature_of("ab\ncd\n\ne", "line-position") == [1, 2, 0, 1, 2, 0, 0, 1]


def test_word_start_marks_the_first_letter_after_a_space_break_or_punctuation():
    assert feature_of("hi, yo\nx-y", "word-start") == [1, 0, 0, 0, 1, 0, 0, 1, 0, 1]


def test_regex_marks_the_characters_of_each_match():
    assert feature_of("foo bo", "regex", "o+") == [0, 1, 1, 0, 0, 1]
    assert feature_of("abc", "regex", "x*") == [0, 0, 0]  # empty matches mark nothing


def test_features_of_words_are_taken_on_the_text_they_spell():
    words = hand_made_lens(mode="words")
    reading = reading_of(["say", '"hello', 'world"', "\n", "next"])  # say "hello world"\nnext
    assert words.feature(reading, "quotes").tolist() == [0, 1, 0, 0, 0]  # after each word
    assert words.feature(reading, "word-start").tolist() == [1, 1, 1, 0, 1]
    assert words.feature(reading, "line-position").tolist() == [3, 10, 17, 0, 4]
    assert words.feature(reading, "regex", "wor|ext").tolist() == [0, 0, 1, 0, 1]


def test_letters_mode_features_see_the_text_the_model_read(runs):
    reading = runs["lstm"].read('He said "hi" (twice)')  # letters: he said hi twice
    assert runs["lstm"].feature(reading, "quotes").tolist() == [0] * len(reading.tokens)
    assert runs["lstm"].feature(reading, "brackets").tolist() == [0] * len(reading.tokens)


# ---------------------------------------------------------------- ranking units


def test_correlations_are_pearsons_r_and_zero_for_a_constant():
    rng = np.random.default_rng(0)
    x, Y = rng.normal(size=50), rng.normal(size=(50, 3))
    Y[:, 1] = 2.5  # a unit that never changes
    r = lens.correlations(x, Y)
    for j in (0, 2):
        assert r[j] == pytest.approx(np.corrcoef(x, Y[:, j])[0, 1])
    assert r[1] == 0
    assert lens.correlations(np.full(50, 3.0), Y).tolist() == [0, 0, 0]


def test_rank_units_finds_a_planted_unit_first():
    text = "ab (cab) a\n(b c) abc (a)\n" * 3
    T, H = len(text), 6
    rng = np.random.default_rng(1)
    brackets = np.array(feature_of(text, "brackets"))
    acts = {key: rng.normal(size=(T, H)).astype(np.float32) for key in ("h1", "h2", "c1", "c2")}
    acts["c2"][:, 4] = brackets + rng.normal(scale=0.01, size=T)  # the bracket cell
    acts["h1"][:, 3] = -0.5 * brackets + rng.normal(scale=0.05, size=T)  # negated, noisier
    acts["h2"][:, 0] = 0.7  # a unit stuck at one value
    ranked = hand_made_lens("chars", "lstm").rank_units(
        reading_of(list(text), acts), "brackets", top=100
    )
    assert len(ranked) == 4 * H
    assert ranked[0]["layer"] == 2 and ranked[0]["kind"] == "c" and ranked[0]["unit"] == 4
    assert ranked[0]["r"] == pytest.approx(1, abs=1e-3)
    assert ranked[1]["layer"] == 1 and ranked[1]["kind"] == "h" and ranked[1]["unit"] == 3
    assert -1 <= ranked[1]["r"] < -0.95
    rs = [u["r"] for u in ranked]
    assert all(math.isfinite(r) for r in rs)
    assert [abs(r) for r in rs] == sorted((abs(r) for r in rs), reverse=True)
    stuck = next(u for u in ranked if (u["layer"], u["kind"], u["unit"]) == (2, "h", 0))
    assert stuck["r"] == 0


def test_rank_units_of_a_real_reading_returns_top_entries(runs):
    lens = runs["rnn"]
    reading = lens.read(TEXTS["rnn"])
    ranked = lens.rank_units(reading, "line-position", top=3)
    assert len(ranked) == 3
    assert {(u["layer"], u["kind"]) for u in ranked} <= {(1, "h")}
    assert all(isinstance(u["unit"], int) and -1 <= u["r"] <= 1 for u in ranked)
    # A feature constant over the text (no quotes): every unit has r = 0, never NaN
    assert [u["r"] for u in lens.rank_units(reading, "quotes", top=5)] == [0.0] * 5


# ---------------------------------------------------------------- generation, training, text


def test_stream_gives_what_generate_gives_in_pieces(runs):
    lens = runs["rnn"]
    pieces = list(lens.stream("The Time ", 12))
    assert pieces[0] == "The Time " and len(pieces) == 13
    assert "".join(pieces) == generate.continue_text(lens.model, lens.vocab, "chars",
                                                      "The Time ", 12)  # fmt: skip
    sampled = "".join(lens.stream("The ", 30, temperature=1.0, top_k=5, seed=3))
    assert sampled == "".join(lens.stream("The ", 30, temperature=1.0, top_k=5, seed=3))


def test_training_gives_the_config_and_the_history(runs):
    facts = runs["lstm"].training()
    assert facts["config"] == runs["lstm"].cfg.to_dict()
    assert facts["config"]["model"]["cell"] == "lstm"
    assert [r["epoch"] for r in facts["history"]] == [1]
    assert {"train_ppl", "val_ppl"} <= set(facts["history"][0])


def test_default_text_is_the_start_of_the_validation_split(runs):
    lens = runs["rnn"]
    cfg = lens.cfg
    data = prepare(cfg.source, cfg.mode, cfg.max_tokens, cfg.val_frac, cfg.batch_size,
                   cfg.num_steps)  # fmt: skip
    validation = detokenize(data.vocab.to_tokens(data.val_ids.tolist()), cfg.mode)
    assert lens.default_text(120) == validation[:120]
    assert lens.default_text() == validation[:2000]  # 300 characters: all of it
    words = runs["gru-words"].default_text(100)  # whole words only
    longer = runs["gru-words"].default_text(MAX_TEXT_CHARS)
    assert 80 < len(words) <= 100 and longer.startswith(words)
    assert longer.split()[: len(words.split())] == words.split()
    assert runs["gru-words"].read(words).tokens  # it reads


def test_default_text_falls_back_to_the_training_prompt(runs, tmp_path):
    lens = runs["rnn"]
    moved = replace(lens.cfg, source=str(tmp_path / "gone.txt"))
    assert Lens(moved, lens.vocab, lens.model).default_text() == lens.cfg.prefix


# ---------------------------------------------------------------- mistakes


def one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message, message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", ["0 token"]),
        ("T", ["1 token"]),
        ("x" * (MAX_TEXT_CHARS + 1), ["20,000"]),
        ("ΩΩЖЖ", ["vocabulary"]),
    ],
)
def test_read_refuses_text_it_cannot_read(runs, text, words):
    with pytest.raises(RnnlabError) as error:
        runs["rnn"].read(text)
    one_line(error, *words)


@pytest.mark.parametrize(
    "name, pattern, words",
    [
        ("colour", None, ["colour", "quotes"]),
        ("regex", None, ["pattern"]),
        ("regex", "", ["pattern"]),
        ("regex", "a" * 201, ["200"]),
        ("regex", "(a", ["not a regular expression"]),
    ],
)
def test_feature_refuses_an_unknown_name_or_a_bad_pattern(name, pattern, words):
    with pytest.raises(RnnlabError) as error:
        feature_of("abc", name, pattern)
    one_line(error, *words)


def test_a_catastrophic_pattern_is_stopped(monkeypatch):
    monkeypatch.setattr(lens, "REGEX_SECONDS", 0.5)
    with pytest.raises(RnnlabError) as error:
        feature_of("a" * 40 + "b", "regex", "(a+)+$")
    one_line(error, "simplify")


def test_rank_units_refuses_no_units():
    with pytest.raises(RnnlabError) as error:
        hand_made_lens().rank_units(reading_of(list("abc")), "word-start", top=0)
    one_line(error, "top")


@pytest.mark.parametrize(
    "prefix, length, options, words",
    [
        ("The ", 0, {}, ["length"]),
        ("The ", MAX_GENERATE + 1, {}, ["2,000"]),
        ("", 5, {}, ["prompt"]),
        ("T" * (MAX_TEXT_CHARS + 1), 5, {}, ["20,000"]),
        ("The ", 5, {"temperature": -1.0}, ["temperature"]),
        ("The ", 5, {"top_k": -2}, ["top"]),
    ],
)
def test_stream_refuses_bad_requests_before_the_first_piece(runs, prefix, length, options, words):
    with pytest.raises(RnnlabError) as error:
        runs["rnn"].stream(prefix, length, **options)  # not iterated: raised at the call
    one_line(error, *words)
