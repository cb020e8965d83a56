"""Write the stand-in Penn Treebank the tests train on: made-up news in PTB's format.

    python tests/data/make_ptb.py

The real corpus (Mikolov's ptb.{train,valid,test}.txt) is not part of the project, so
tests that need ``ptb`` read tests/data/corpora/ptb/{train,valid,test}.txt instead:
sentences drawn from a small seeded grammar of business news, written the way the
real files are. Each line is one sentence, a space before and after every word;
words are lower case; every number is ``N``; there is no punctuation besides what
stays inside words (``'s``, ``n't``, ``$``, ``&``, hyphens); words too rare in the
training split are ``<unk>``, so the validation and test splits use only training
words. tests/test_corpus.py checks that these files are what ``corpus_files()``
returns and that they keep that format, which it also checks on the real files.

Run it again only when the grammar changes, and commit the three files it writes.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "corpora" / "ptb"
SEED = 23
SENTENCES = {"train": 480, "valid": 64, "test": 64}
MIN_COUNT = 2  # a word seen fewer times in the training split becomes <unk>

SYLLABLES = ["bar", "cor", "del", "fen", "gal", "hol", "kin", "lor", "mar", "nev", "ost",
             "pra", "quin", "ros", "sel", "tam", "vor", "wen", "zel", "dun"]  # fmt: skip
FIRMS = ["inc.", "corp.", "co.", "group", "industries", "holdings", "bancorp", "& co."]
ROLES = ["chairman", "chief executive", "president", "spokesman", "treasurer"]
SAYERS = ["analysts", "traders", "investors", "economists", "officials", "dealers"]
THINGS = ["earnings", "sales", "revenue", "profit", "orders", "shares", "bonds", "prices",
          "output", "debt", "spending", "exports", "imports", "loans", "deposits"]  # fmt: skip
ADJECTIVES = ["third-quarter", "annual", "net", "operating", "federal", "foreign", "junk",
              "japanese", "domestic", "long-term", "short-term", "new", "big"]  # fmt: skip
RISE = ["rose", "fell", "climbed", "slipped", "jumped", "dropped", "gained", "eased"]
ACTS = ["buy", "sell", "acquire", "sell off", "restructure", "close", "expand", "merge"]
ASSETS = ["its stake in", "a unit of", "the assets of", "plants of", "the debt of"]
TIMES = ["last week", "next year", "this month", "in the third quarter", "in #",
         "by the end of the year", "yesterday", "in late trading", "a year earlier"]  # fmt: skip
UNITS = ["million", "billion", "a share", "cents a share"]
MARKETS = ["the dow jones industrial average", "the stock market", "the yen", "the dollar",
           "the nasdaq composite index", "s&p 's index", "treasury bond prices"]  # fmt: skip


def made_up_name(rng: random.Random) -> str:
    """A name no one has, from two or three syllables: the long tail of rare words."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3))))


def number(rng: random.Random) -> str:
    """A number as a newspaper prints it (later turned into N, as PTB turned its numbers)."""
    whole, tenth, thousands = rng.randint(2, 99), rng.randint(1, 9), rng.randint(100, 999)
    year = rng.randint(1950, 1995)
    return rng.choice([str(whole), f"{whole}.{tenth}", f"{tenth},{thousands}", str(year)])


def company(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(["the company", "the bank", "the firm", "the concern"])
    return f"{made_up_name(rng)} {rng.choice(FIRMS)}"


def person(rng: random.Random) -> str:
    title = rng.choice(["mr.", "ms.", "mr.", "mrs."])
    if rng.random() < 0.5:
        return f"{title} {made_up_name(rng)}"
    return f"{title} {made_up_name(rng)} {company(rng)} 's {rng.choice(ROLES)}"


def amount(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{number(rng)} %"
    return f"$ {number(rng)} {rng.choice(UNITS)}"


def statement(rng: random.Random) -> str:
    """One clause of news: a company's figures, a plan, a market's move or a denial."""
    kind = rng.randrange(5)
    if kind == 0:
        thing = f"{rng.choice(ADJECTIVES)} {rng.choice(THINGS)}"
        return f"{company(rng)} 's {thing} {rng.choice(RISE)} {amount(rng)} {rng.choice(TIMES)}"
    if kind == 1:
        act = f"{rng.choice(ACTS)} {rng.choice(ASSETS)} {company(rng)}"
        return f"{company(rng)} said it will {act} for {amount(rng)}"
    if kind == 2:
        return f"{rng.choice(MARKETS)} {rng.choice(RISE)} {number(rng)} points {rng.choice(TIMES)}"
    if kind == 3:
        return f"{company(rng)} does n't expect {rng.choice(THINGS)} to grow {rng.choice(TIMES)}"
    return f"{rng.choice(ADJECTIVES)} {rng.choice(THINGS)} {rng.choice(RISE)} {amount(rng)}"


def sentence(rng: random.Random) -> str:
    """A sentence, sometimes reported by someone, sometimes two clauses joined."""
    text = statement(rng)
    if rng.random() < 0.3:
        text = f"{rng.choice([person(rng), rng.choice(SAYERS)])} said {text}"
    if rng.random() < 0.25:
        text = f"{text} {rng.choice(['and', 'but', 'while', 'because'])} {statement(rng)}"
    return text.replace("#", number(rng))


def words_as_ptb(text: str) -> list[str]:
    """PTB's normalisation: lower case, and every number is N (a percentage is ``N N``,
    as the real files write one)."""
    return ["N" if re.fullmatch(r"[\d.,%]+", word) else word.lower() for word in text.split()]


def corpus_files(seed: int = SEED) -> dict[str, str]:
    """split -> the text of ptb/<split>.txt: the training split first, whose rare words
    (and the held-out splits' words it lacks) become <unk>."""
    rng = random.Random(seed)
    drawn = {split: [words_as_ptb(sentence(rng)) for _ in range(n)]
             for split, n in SENTENCES.items()}  # fmt: skip
    counts = Counter(word for line in drawn["train"] for word in line)
    known = {word for word, count in counts.items() if count >= MIN_COUNT}
    return {
        split: "".join(
            " " + " ".join(word if word in known else "<unk>" for word in line) + " \n"
            for line in lines
        )
        for split, lines in drawn.items()
    }


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for split, text in corpus_files().items():
        (FOLDER / f"{split}.txt").write_text(text, encoding="utf-8")
        print(f"{FOLDER / f'{split}.txt'}: {len(text.splitlines())} lines, {len(text)} bytes")


if __name__ == "__main__":
    main()
