"""Tokenization modes: d2l's Time Machine numbers, and what each mode keeps."""

import pytest

from conftest import TIME_MACHINE_D2L_FREQS
from rnnlab import corpus
from rnnlab.errors import RnnlabError
from rnnlab.tokenize import EOS, MODES, d2l_lines, detokenize, tokenize
from rnnlab.vocab import Vocab


@pytest.fixture(scope="module")
def time_machine_tokens():
    """The Time Machine in d2l mode (the copy shipped with rnnlab, checked by its SHA-1)."""
    return tokenize(corpus.read_text("timemachine"), "d2l")


def test_d2l_mode_gives_170580_tokens_on_the_time_machine(time_machine_tokens):
    assert len(time_machine_tokens) == 170580
    assert "".join(time_machine_tokens[:29]) == "the time machine by h g wells"


def test_d2l_mode_reproduces_the_books_frequency_table(time_machine_tokens):
    vocab = Vocab(time_machine_tokens)
    assert vocab.token_freqs == TIME_MACHINE_D2L_FREQS
    assert sum(freq for _, freq in vocab.token_freqs) == 170580


def test_d2l_vocabulary_is_unk_space_and_26_letters_in_frequency_order(time_machine_tokens):
    vocab = Vocab(time_machine_tokens)
    assert len(vocab) == 28
    assert vocab.idx_to_token == ["<unk>"] + [token for token, _ in TIME_MACHINE_D2L_FREQS]
    assert vocab[" "] == 1 and vocab["e"] == 2 and vocab["q"] == 27


def test_d2l_mode_glues_lines_where_letters_mode_puts_a_space():
    text = corpus.read_text("timemachine")
    assert "of him)\nwas" in text
    assert "of himwas" in "".join(tokenize(text, "d2l"))
    assert "of him was" in "".join(tokenize(text, "letters"))


def test_d2l_mode_joins_lines_with_no_separator():
    text = "The Time Traveller (for so it will be convenient to speak of him)\nwas expounding"
    assert "".join(tokenize(text, "d2l")).endswith("speak of himwas expounding")
    assert "".join(tokenize(text, "letters")).endswith("speak of him was expounding")


def test_d2l_lines_clean_each_line_like_the_book():
    assert d2l_lines("  The TIME-Machine, 1895!\n\n   \nI.\n") == [
        "the time machine",
        "",
        "",
        "i",
        "",
    ]


def test_letter_modes_keep_only_lowercase_letters_and_spaces():
    text = "Ça va? Größe 42 -- naïve\tTAB\r\nCRLF"
    # non-ASCII letters are non-letters here, as in d2l's regular expression
    assert "".join(tokenize(text, "letters")) == "a va gr e na ve tab crlf"
    # d2l splits lines at LF only: the CR is stripped with the line and the lines glue
    assert "".join(tokenize(text, "d2l")) == "a va gr e na ve tabcrlf"


def test_chars_mode_keeps_case_punctuation_and_newlines():
    text = "First Citizen:\nBefore we proceed, hear me speak.\n\nAll: Speak!"
    tokens = tokenize(text, "chars")
    assert tokens == list(text)
    assert {"F", "C", ":", "\n", ",", ".", "!", " "} <= set(tokens)
    assert detokenize(tokens, "chars") == text


def test_chars_mode_keeps_any_unicode_character():
    text = "e\u0301 🙂 日本"
    assert tokenize(text, "chars") == ["e", "\u0301", " ", "🙂", " ", "日", "本"]


def test_words_mode_adds_eos_after_each_non_empty_line():
    text = " aer banknote berlitz \n\n   \n no it was n't black monday \n"
    assert tokenize(text, "words") == [
        "aer",
        "banknote",
        "berlitz",
        EOS,
        "no",
        "it",
        "was",
        "n't",
        "black",
        "monday",
        EOS,
    ]


def test_words_mode_splits_on_any_whitespace_within_a_line():
    assert tokenize("a\tb\u00a0c  d\r", "words") == ["a", "b", "c", "d", EOS]


def test_words_detokenize_puts_eos_back_as_line_breaks():
    tokens = tokenize("the cat\nsat on\n", "words")
    assert detokenize(tokens, "words") == "the cat\nsat on\n"
    assert detokenize([EOS, "a", "b", EOS, EOS, "c"], "words") == "\na b\n\nc"
    assert detokenize([], "words") == ""


def test_empty_text_gives_no_tokens_in_every_mode():
    for mode in MODES:
        assert tokenize("", mode) == []


def test_unknown_mode_names_the_modes():
    with pytest.raises(RnnlabError) as info:
        tokenize("text", "bytes")
    message = str(info.value)
    assert "unknown tokenization mode 'bytes'" in message
    for mode in MODES:
        assert mode in message
