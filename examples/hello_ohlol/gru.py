"""Learn "hello" -> "ohlol" with one-hot inputs, nn.GRU and a linear head.

Unlike lstm.py this keeps the time-major one-hot input of rnn_module.py, but
adds a linear output layer so the GRU's hidden size need not equal the
vocabulary size.

Shapes:

* inputs: (seq_len=5, batch=1, input_size=4) one-hot, time-major
* gru output: (seq_len=5, batch=1, hidden_size=8); h_n: (num_layers=1, batch=1, 8)
* logits: (seq_len=5, batch=1, vocab=4) -> reshaped to (seq_len * batch = 5, 4)
* labels: (seq_len * batch = 5,)

Run: ``python examples/hello_ohlol/gru.py``
"""

import torch
from common import VOCAB_SIZE, one_hot_inputs, sequence_loss, train
from torch import nn

HIDDEN_SIZE = 8


class OneHotGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(input_size=VOCAB_SIZE, hidden_size=HIDDEN_SIZE)
        self.fc = nn.Linear(HIDDEN_SIZE, VOCAB_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.gru(x)
        return self.fc(output).reshape(-1, VOCAB_SIZE)


def main(seed: int = 0, epochs: int = 30, quiet: bool = False) -> str:
    torch.manual_seed(seed)
    model = OneHotGRU()
    inputs = one_hot_inputs()
    return train(model, lambda: sequence_loss(model(inputs)), epochs, lr=0.1, quiet=quiet)


if __name__ == "__main__":
    main()
