"""d2l 8.2 (text preprocessing): the notes' code; only the import differs."""
import collections
import re

from rnnlab import d2l

lines = d2l.read_time_machine()
print(f'# text lines: {len(lines)}')
print(lines[0])
print(lines[10])

tokens = d2l.tokenize(lines)
for i in range(11):
    print(tokens[i])

vocab = d2l.Vocab(tokens)
print(list(vocab.token_to_idx.items())[:10])

for i in [0, 10]:
    print('words:', tokens[i])
    print('indices:', vocab[tokens[i]])

corpus, vocab = d2l.load_corpus_time_machine()
print(len(corpus), len(vocab))
