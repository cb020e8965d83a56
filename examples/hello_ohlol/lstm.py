"""Learn "hello" -> "ohlol" with an embedding, nn.LSTM and a linear head.

Same structure as embedding_rnn.py with the vanilla RNN swapped for an LSTM,
whose state is a pair (h, c) rather than a single tensor.

Shapes:

* inputs: (batch=1, seq_len=5), long indices
* embedded: (batch=1, seq_len=5, embedding_dim=10)
* lstm output: (batch=1, seq_len=5, hidden_size=8); h_n and c_n: (num_layers=1, batch=1, 8)
* logits: (batch=1, seq_len=5, vocab=4) -> reshaped to (batch * seq_len = 5, 4)
* labels: (batch * seq_len = 5,)

Run: ``python examples/hello_ohlol/lstm.py``
"""

import torch
from common import VOCAB_SIZE, index_inputs, sequence_loss, train
from torch import nn

EMBEDDING_DIM = 10
HIDDEN_SIZE = 8


class EmbeddingLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB_SIZE, EMBEDDING_DIM)
        self.lstm = nn.LSTM(EMBEDDING_DIM, HIDDEN_SIZE, batch_first=True)
        self.fc = nn.Linear(HIDDEN_SIZE, VOCAB_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Only the per-step outputs matter here; the final (h_n, c_n) is unused.
        output, _ = self.lstm(self.embedding(x))
        return self.fc(output).reshape(-1, VOCAB_SIZE)


def main(seed: int = 0, epochs: int = 30, quiet: bool = False) -> str:
    torch.manual_seed(seed)
    model = EmbeddingLSTM()
    inputs = index_inputs()
    return train(model, lambda: sequence_loss(model(inputs)), epochs, lr=0.1, quiet=quiet)


if __name__ == "__main__":
    main()
