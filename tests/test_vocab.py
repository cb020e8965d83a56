"""Vocab: index order, unknown tokens, reserved tokens, min_freq, saving and loading."""

import json

import numpy as np
import pytest
import torch

from rnnlab.errors import RnnlabError
from rnnlab.vocab import UNK, Vocab


def test_unk_is_index_zero_and_unknown_tokens_map_to_it():
    vocab = Vocab(list("hello"))
    assert vocab.idx_to_token[0] == UNK and vocab.unk == 0
    assert vocab["z"] == 0 and vocab[UNK] == 0
    assert vocab.to_tokens(vocab[list("hez")]) == ["h", "e", UNK]


def test_tokens_are_ordered_by_frequency_with_ties_in_order_of_first_appearance():
    vocab = Vocab(list("dcbabcc a"))
    # c x3; b, a x2 (b seen first); d, space x1 (d seen first)
    assert vocab.idx_to_token == [UNK, "c", "b", "a", "d", " "]
    assert vocab.token_freqs == [("c", 3), ("b", 2), ("a", 2), ("d", 1), (" ", 1)]


def test_reserved_tokens_come_right_after_unk():
    vocab = Vocab(["x", "y", "y", "<eos>"], reserved_tokens=["<pad>", "<eos>"])
    assert vocab.idx_to_token == [UNK, "<pad>", "<eos>", "y", "x"]
    assert vocab["<eos>"] == 2


def test_repeated_reserved_tokens_get_one_index():
    vocab = Vocab(["a"], reserved_tokens=["<pad>", UNK, "<pad>", "<bos>"])
    assert vocab.idx_to_token == [UNK, "<pad>", "<bos>", "a"]
    assert vocab.token_to_idx == {UNK: 0, "<pad>": 1, "<bos>": 2, "a": 3}


def test_unk_in_the_text_is_not_added_twice():
    vocab = Vocab(["the", UNK, UNK, UNK, "cat"])  # Penn Treebank text contains <unk> itself
    assert vocab.idx_to_token == [UNK, "the", "cat"]


def test_min_freq_drops_rare_tokens_but_keeps_their_counts():
    vocab = Vocab(list("aaabbc"), min_freq=2)
    assert vocab.idx_to_token == [UNK, "a", "b"]
    assert vocab["c"] == 0
    assert ("c", 1) in vocab.token_freqs


def test_accepts_a_list_of_lines_of_tokens_like_d2l():
    assert Vocab([["a", "b"], ["b"]]).idx_to_token == [UNK, "b", "a"]


def test_empty_vocab_has_only_unk():
    vocab = Vocab([])
    assert len(vocab) == 1 and vocab["anything"] == 0


def test_to_tokens_takes_an_index_a_list_a_tensor_or_an_array():
    vocab = Vocab(list("abc"))
    assert vocab.to_tokens(2) == "b"
    assert vocab.to_tokens([1, 3]) == ["a", "c"]
    assert vocab.to_tokens(torch.tensor([3, 0])) == ["c", UNK]
    assert vocab.to_tokens(torch.tensor(1)) == "a"
    assert vocab.to_tokens(np.array([2, 2])) == ["b", "b"]


def test_unknown_lists_distinct_missing_tokens_in_order():
    vocab = Vocab(list("abc"))
    assert vocab.unknown(list("xaxyb")) == ["x", "y"]


def test_json_round_trip_keeps_the_table_and_non_ascii_tokens():
    vocab = Vocab(["é", "🙂", "\n", "", "a", "a"], reserved_tokens=["<eos>"])
    text = vocab.to_json()
    assert "é" in text  # stored as UTF-8 text, not \u escapes
    again = Vocab.from_json(text)
    assert again.idx_to_token == vocab.idx_to_token == [UNK, "<eos>", "a", "é", "🙂", "\n", ""]
    assert again.token_to_idx == vocab.token_to_idx
    assert again[["🙂", "zz"]] == [4, 0]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"tokens": [UNK]}),
        json.dumps({"idx_to_token": []}),
        json.dumps({"idx_to_token": ["a", UNK]}),
        json.dumps({"idx_to_token": [UNK, "a", "a"]}),
        json.dumps({"idx_to_token": 5}),
        json.dumps({"idx_to_token": [UNK, 3]}),
    ],
)
def test_damaged_vocab_json_is_refused(text):
    with pytest.raises(RnnlabError, match="(not a valid vocabulary|vocabulary is invalid)"):
        Vocab.from_json(text)
