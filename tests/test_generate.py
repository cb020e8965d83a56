"""Generation: the book's warm-up, greedy decoding, seeded sampling, unknown prefix tokens;
text prompts and the default prompt a run takes from its own text."""

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from conftest import TINY_RUN, run_cli
from rnnlab import generate
from rnnlab.errors import RnnlabError
from rnnlab.models import CELLS, ScratchLM
from rnnlab.options import MAX_TEMPERATURE
from rnnlab.tokenize import detokenize, tokenize
from rnnlab.vocab import Vocab

VOCAB = Vocab(list("the time traveller, by h g wells"))
WORDS = Vocab(tokenize("the time machine\nby h g wells\n", "words"))


def random_model(cell="gru", seed=0):
    torch.manual_seed(seed)
    model = ScratchLM(len(VOCAB), 12, 2, cell)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def d2l_style_predict(prefix, num_preds, net, vocab):
    """The notes' predict_ch8, written out: feed the prefix one token at a time."""
    state = net.begin_state(1)
    outputs = [vocab[prefix[0]]]
    for y in prefix[1:]:
        _, state = net(torch.tensor([[outputs[-1]]]), state)
        outputs.append(vocab[y])
    for _ in range(num_preds):
        y, state = net(torch.tensor([[outputs[-1]]]), state)
        outputs.append(int(y.argmax(dim=1)))
    return "".join(vocab.to_tokens(outputs))


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_generation_equals_the_books_predict(cell):
    model = random_model(cell)
    tokens = generate.predict(model, list("time traveller "), 20, VOCAB)
    assert "".join(tokens) == d2l_style_predict("time traveller ", 20, model, VOCAB)
    assert "".join(tokens[:15]) == "time traveller " and len(tokens) == 15 + 20


def test_sampling_is_repeatable_with_a_seed_and_varies_without_it():
    model = random_model()
    ids = [VOCAB["t"]]
    a = generate.generate_ids(model, ids, 50, temperature=1.0, seed=1)
    b = generate.generate_ids(model, ids, 50, temperature=1.0, seed=1)
    c = generate.generate_ids(model, ids, 50, temperature=1.0, seed=2)
    assert a == b and a != c


def test_top_k_one_is_greedy():
    model = random_model()
    ids = [VOCAB["t"], VOCAB["h"]]
    assert generate.generate_ids(
        model, ids, 30, temperature=0.7, top_k=1, seed=0
    ) == generate.generate_ids(model, ids, 30)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampling_draws_from_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    expected = torch.softmax(logits / temperature, dim=0)
    g = torch.Generator().manual_seed(0)
    n = 4000
    draws = torch.tensor([generate.next_token(logits, temperature, generator=g) for _ in range(n)])
    frequencies = torch.bincount(draws, minlength=4) / n
    # within 4 standard deviations (sqrt(p (1 - p) / n) <= 0.008) of each probability
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.03)


def test_top_k_only_draws_from_the_k_most_likely():
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0, -2.0])
    g = torch.Generator().manual_seed(0)
    draws = {generate.next_token(logits, 5.0, top_k=2, generator=g) for _ in range(200)}
    assert draws == {0, 1}


# Every temperature a user may give (0 to MAX_TEMPERATURE), the subnormal ones and the
# smallest float above 0 included, and logits from the tiny to the largest float32.
TEMPERATURES = st.one_of(
    st.floats(0, MAX_TEMPERATURE, allow_subnormal=True),
    st.sampled_from([5e-324, 1e-320, 1e-310, 2.2e-308, 1e-300, 1e-45, MAX_TEMPERATURE]),
)
LOGIT = st.one_of(
    st.floats(-20, 20, width=32),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-40, 3.4028235e38, -3.4028235e38]),
)
LOGITS = st.lists(LOGIT, min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(LOGITS, TEMPERATURES, st.integers(-1, 20), st.integers(0, 2**32))
def test_the_sampler_gives_a_token_for_any_temperature_and_top_k(values, temperature, k, seed):
    """Always a token id of the vocabulary, among the top_k likeliest; one of the likeliest
    where every other token's probability underflows to 0 (the temperature is too small to
    tell them apart)."""
    logits = torch.tensor(values, dtype=torch.float32)
    token = generate.next_token(logits, temperature, k, torch.Generator().manual_seed(seed))
    assert isinstance(token, int) and 0 <= token < len(values)
    top = logits.double().max()
    others = logits.double()[logits.double() < top]
    degenerate = temperature == 0 or bool(((others - top) / temperature < -800).all())
    event("degenerate" if degenerate else "sampled")
    if 0 < k < len(values):
        assert logits[token] >= logits.topk(k).values[-1]  # one of the k likeliest
    if degenerate:
        assert logits[token] == top


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([float("inf"), float("-inf"), float("nan"), 1.0]), min_size=1,
                max_size=6), TEMPERATURES, st.integers(0, 8))  # fmt: skip
def test_logits_that_are_not_finite_still_give_a_token(values, temperature, k):
    token = generate.next_token(torch.tensor(values), temperature, k)
    assert 0 <= token < len(values)


@pytest.mark.parametrize("temperature", [5e-324, 1e-320, 1e-310])
def test_a_subnormal_temperature_is_greedy(temperature):
    logits = torch.tensor([3e38, -3e38, 2.0, 3.1e38], dtype=torch.float32)
    assert generate.next_token(logits, temperature) == 3
    assert generate.next_token(logits, temperature, top_k=2) == 3
    assert generate.next_token(logits, temperature, top_k=10) == 3
    model = random_model()
    ids = [VOCAB["t"], VOCAB["h"]]
    assert generate.generate_ids(model, ids, 20, temperature=temperature, seed=0) == (
        generate.generate_ids(model, ids, 20)
    )


@pytest.mark.slow
def test_generate_with_a_subnormal_temperature_runs(tmp_path):
    run = tmp_path / "run"
    run_cli("train", "timemachine", *TINY_RUN, "--epochs", "1", "--quiet", "--out", run, check=0)
    result = run_cli("generate", run, "--temperature", "1e-310", "--length", "20", check=0)
    assert "Traceback" not in result.stderr and len(result.stdout) > 20


def test_unknown_prefix_tokens_warn_and_map_to_unk():
    model = random_model()
    with pytest.warns(UserWarning, match="'Z'"):
        out = generate.predict(model, list("tZe"), 3, VOCAB)
    assert out[1] == "<unk>" and len(out) == 6


@pytest.mark.parametrize("length", [-1, generate.MAX_LENGTH + 1])
def test_absurd_lengths_are_refused(length):
    with pytest.raises(RnnlabError, match="length"):
        generate.generate_ids(random_model(), [1], length)


def test_empty_prefix_is_refused():
    with pytest.raises(RnnlabError, match="prefix"):
        generate.generate_ids(random_model(), [], 5)


def constant_model(vocab, token):
    """A model whose greedy choice is always ``token``, whatever came before."""
    model = ScratchLM(len(vocab), 4)
    with torch.no_grad():
        model.W_hq.zero_()
        model.b_q.zero_()
        model.b_q[vocab[token]] = 5.0
    return model


def test_prompt_ids_read_unknown_tokens_as_unk_and_report_each_once():
    ids, unknown = generate.prompt_ids("tZeZ?", "chars", VOCAB)
    assert ids == [VOCAB["t"], VOCAB.unk, VOCAB["e"], VOCAB.unk, VOCAB.unk]
    assert unknown == ["Z", "?"]
    ids, unknown = generate.prompt_ids("The  Time", "letters", VOCAB)  # cleaned as training text
    assert ids == VOCAB[list("the time")] and unknown == []
    ids, unknown = generate.prompt_ids("the time traveller", "words", WORDS)
    assert ids == [WORDS["the"], WORDS["time"], WORDS.unk] and unknown == ["traveller"]


@pytest.mark.parametrize(
    "prompt, mode", [("", "chars"), ("", "letters"), ("", "d2l"), (" \n\t", "words")]
)
def test_a_prompt_without_tokens_is_refused(prompt, mode):
    with pytest.raises(RnnlabError, match="no tokens"):
        generate.prompt_ids(prompt, mode, VOCAB)
    with pytest.raises(RnnlabError, match="no tokens"):
        generate.continue_text(random_model(), VOCAB, mode, prompt, 5)


def test_continue_text_is_the_prompt_as_typed_then_the_continuation():
    model = constant_model(VOCAB, "e")
    assert generate.continue_text(model, VOCAB, "chars", "th", 3) == "theee"
    assert generate.continue_text(model, VOCAB, "letters", "Th", 2) == "Thee"


@pytest.mark.parametrize("prompt", ["the time", "the time ", "the time  "])
def test_words_are_continued_with_one_space_between_them(prompt):
    model = constant_model(WORDS, "machine")
    assert (
        generate.continue_text(model, WORDS, "words", prompt, 3)
        == "the time machine machine machine"
    )


@pytest.mark.parametrize(
    "vocab, mode, prompt",
    [(VOCAB, "chars", "the "), (WORDS, "words", "the time "), (WORDS, "words", "wells\n")],
)
def test_streamed_pieces_are_the_prompt_then_one_piece_per_token(vocab, mode, prompt):
    """Each piece is the text one generated token adds (words: with the space before it,
    none next to a line break); together they are the prompt and detokenized ids."""
    torch.manual_seed(0)
    model = ScratchLM(len(vocab), 12, 1, "rnn")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 1.0)
    pieces = list(generate.stream_text(model, vocab, mode, prompt, 12, temperature=1.0, seed=3))
    assert len(pieces) == 1 + 12
    assert pieces[0] == (prompt.rstrip(" ") if mode == "words" else prompt)
    ids, _ = generate.prompt_ids(prompt, mode, vocab)
    new = generate.generate_ids(model, ids, 12, temperature=1.0, seed=3)[len(ids) :]
    tokens = vocab.to_tokens(new)
    generated = detokenize(tokens, mode)
    if mode == "words" and not prompt.endswith("\n") and tokens[0] != "<eos>":
        generated = " " + generated
    assert "".join(pieces[1:]) == generated


def test_streaming_starts_before_anything_is_generated():
    """The prompt comes out before the model runs: a page shows it at once."""
    pieces = generate.stream_text(None, VOCAB, "chars", "the ", 5)
    assert next(pieces) == "the "  # a model of None would fail on its first use


def test_continue_text_samples_repeatably_with_a_seed():
    model = random_model()
    texts = [
        generate.continue_text(model, VOCAB, "chars", "the ", 30, temperature=1.0, seed=s)
        for s in (1, 1, 2)
    ]
    assert texts[0] == texts[1] != texts[2]
    assert all(t.startswith("the ") and len(t) > len("the ") for t in texts)


@pytest.mark.parametrize(
    "text, mode, prompt",
    [
        # a long first line is cut after its last space within 24 characters
        ("The Time Machine, by H. G. Wells\n\nI\n", "letters", "the time machine by h g "),
        (
            "The Time Traveller (for so it will be convenient to speak of him)\nwas",
            "chars",
            "The Time Traveller (for ",
        ),
        ("time traveller\nsome more text", "letters", "time traveller some more "),  # \n: a space
        # a short first line is taken whole; in chars mode with its line break
        ("Time Traveller!", "letters", "time traveller"),
        ("int main(void) {\n    return 0;\n}\n", "chars", "int main(void) {\n"),
        ("\n\n   Title\nbody", "chars", "Title\n"),  # blank lines and indentation skipped
        ("hello", "chars", "hello"),  # the whole text: there is no line break to keep
        # words mode: the first three words, whatever lines they are on
        ("the time machine\nby h g wells\n", "words", "the time machine "),
        ("hello world\nfoo bar\n", "words", "hello world foo "),
        # text without spaces between words (Chinese): the first 8 characters
        (
            "我们的时间旅行者（这样称呼他比较方便）正在向我们讲解一个深奥的问题。\n",
            "chars",
            "我们的时间旅行者",
        ),
        ("", "chars", ""),
        ("", "words", ""),
    ],
)
def test_default_prompt_is_the_start_of_the_runs_own_text(text, mode, prompt):
    assert generate.default_prompt(tokenize(text, mode), mode) == prompt
