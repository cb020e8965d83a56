"""Generation: the book's warm-up, greedy decoding, seeded sampling, unknown prefix tokens."""
import pytest
import torch

from rnnlab import generate
from rnnlab.errors import RnnlabError
from rnnlab.models import ScratchLM
from rnnlab.vocab import Vocab

VOCAB = Vocab(list("the time traveller, by h g wells"))


def random_model(kind="gru", seed=0):
    torch.manual_seed(seed)
    model = ScratchLM(len(VOCAB), 12, 2, kind)
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


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_greedy_generation_equals_the_books_predict(kind):
    model = random_model(kind)
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
    assert (generate.generate_ids(model, ids, 30, temperature=0.7, top_k=1, seed=0)
            == generate.generate_ids(model, ids, 30))


def test_top_k_only_draws_from_the_k_most_likely():
    logits = torch.tensor([5.0, 4.0, 3.0, -1.0, -2.0])
    g = torch.Generator().manual_seed(0)
    draws = {generate.next_token(logits, 5.0, top_k=2, generator=g) for _ in range(200)}
    assert draws == {0, 1}


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
