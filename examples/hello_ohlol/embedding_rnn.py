"""Learn "hello" -> "ohlol" with an embedding, a two-layer nn.RNN and a linear head.

Instead of one-hot vectors the characters enter as indices and are looked up
in a learned embedding table; a linear layer decouples the hidden size from
the vocabulary size. The RNN uses batch_first=True.

Shapes:

* inputs: (batch=1, seq_len=5), long indices
* embedded: (batch=1, seq_len=5, embedding_dim=10)
* rnn output: (batch=1, seq_len=5, hidden_size=8)
* logits: (batch=1, seq_len=5, vocab=4) -> reshaped to (batch * seq_len = 5, 4)
* labels: (batch * seq_len = 5,)

Run: ``python examples/hello_ohlol/embedding_rnn.py``
"""

import torch
from common import VOCAB_SIZE, index_inputs, sequence_loss, train
from torch import nn

EMBEDDING_DIM = 10
HIDDEN_SIZE = 8
NUM_LAYERS = 2


class EmbeddingRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB_SIZE, EMBEDDING_DIM)
        self.rnn = nn.RNN(EMBEDDING_DIM, HIDDEN_SIZE, num_layers=NUM_LAYERS, batch_first=True)
        self.fc = nn.Linear(HIDDEN_SIZE, VOCAB_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.RNN defaults h0 to zeros, which is what this exercise wants.
        output, _ = self.rnn(self.embedding(x))
        return self.fc(output).reshape(-1, VOCAB_SIZE)


def main(seed: int = 0, epochs: int = 30, quiet: bool = False) -> str:
    torch.manual_seed(seed)
    model = EmbeddingRNN()
    inputs = index_inputs()
    return train(model, lambda: sequence_loss(model(inputs)), epochs, lr=0.1, quiet=quiet)


if __name__ == "__main__":
    main()
