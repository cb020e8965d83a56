"""Tokenization modes: d2l's Time Machine numbers, and what each mode keeps."""
import os
from pathlib import Path

import pytest

from rnnlab import corpus
from rnnlab.errors import RnnlabError
from rnnlab.tokenize import EOS, MODES, d2l_lines, detokenize, tokenize
from rnnlab.vocab import Vocab

SHARED = Path(os.environ.get("RNNLAB_DATA_DIR") or "/work/shared/data")
TIME_MACHINE = SHARED / "timemachine.txt"
needs_data = pytest.mark.skipif(not TIME_MACHINE.is_file(),
                                reason="timemachine.txt not found; set RNNLAB_DATA_DIR")

# d2l 8.2 on The Time Machine: every character token with its count, most frequent first.
D2L_FREQS = [
    (" ", 29927), ("e", 17838), ("t", 13515), ("a", 11704), ("i", 10138), ("n", 9917),
    ("o", 9758), ("s", 8486), ("h", 8257), ("r", 7674), ("d", 6337), ("l", 6146),
    ("m", 4043), ("u", 3805), ("c", 3424), ("f", 3354), ("w", 3225), ("g", 3075),
    ("y", 2679), ("p", 2427), ("b", 1897), ("v", 1295), ("k", 1087), ("x", 236),
    ("z", 144), ("j", 97), ("q", 95),
]


@pytest.fixture(scope="module")
def time_machine_tokens():
    if not TIME_MACHINE.is_file():
        pytest.skip("timemachine.txt not found; set RNNLAB_DATA_DIR")
    return tokenize(corpus.read_path(TIME_MACHINE), "d2l")


@needs_data
def test_d2l_mode_gives_170580_tokens_on_the_time_machine(time_machine_tokens):
    assert len(time_machine_tokens) == 170580
    assert "".join(time_machine_tokens[:29]) == "the time machine by h g wells"


@needs_data
def test_d2l_mode_reproduces_the_books_frequency_table(time_machine_tokens):
    vocab = Vocab(time_machine_tokens)
    assert vocab.token_freqs == D2L_FREQS
    assert sum(freq for _, freq in vocab.token_freqs) == 170580


@needs_data
def test_d2l_vocabulary_is_unk_space_and_26_letters_in_frequency_order(time_machine_tokens):
    vocab = Vocab(time_machine_tokens)
    assert len(vocab) == 28
    assert vocab.idx_to_token == ["<unk>"] + [token for token, _ in D2L_FREQS]
    assert vocab[" "] == 1 and vocab["e"] == 2 and vocab["q"] == 27


@needs_data
def test_d2l_mode_glues_lines_where_letters_mode_puts_a_space():
    text = corpus.read_path(TIME_MACHINE)
    assert "of him)\nwas" in text
    assert "of himwas" in "".join(tokenize(text, "d2l"))
    assert "of him was" in "".join(tokenize(text, "letters"))


def test_d2l_mode_joins_lines_with_no_separator():
    text = "The Time Traveller (for so it will be convenient to speak of him)\nwas expounding"
    assert "".join(tokenize(text, "d2l")).endswith("speak of himwas expounding")
    assert "".join(tokenize(text, "letters")).endswith("speak of him was expounding")


def test_d2l_lines_clean_each_line_like_the_book():
    assert d2l_lines("  The TIME-Machine, 1895!\n\n   \nI.\n") == [
        "the time machine", "", "", "i", ""]


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
        "aer", "banknote", "berlitz", EOS,
        "no", "it", "was", "n't", "black", "monday", EOS]


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
