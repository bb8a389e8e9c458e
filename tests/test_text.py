"""The character tokenizer, position splits and context windows of lesson 17, on the shipped corpora."""
import numpy as np
import pytest

import minidl
from minidl.data import names, tiny_shakespeare
from minidl.text import CharTokenizer, context_windows, split_by_position


def test_tokenizer_round_trips_shakespeare():
    text = tiny_shakespeare()
    tok = CharTokenizer(text)
    assert len(tok) == 65 and tok.itos == sorted(set(text))
    piece = text[:2000]
    assert tok.decode(tok.encode(piece)) == piece and tok.decode(minidl.tensor(tok.encode(piece))) == piece
    with pytest.raises(ValueError, match="outside the vocabulary"): tok.decode([65])
    with pytest.raises(ValueError, match="boundary must be a single character"): CharTokenizer("ab", boundary="..")


def test_split_by_position_covers_everything_once():
    text = tiny_shakespeare()
    train, val = split_by_position(text, (0.9, 0.1))
    assert train + val == text and len(train) == round(0.9 * len(text))
    with pytest.raises(ValueError, match="must sum to 1"): split_by_position(text, (0.5, 0.6))


def test_context_windows_match_a_direct_reading():
    words = names()[:200]
    tok = CharTokenizer("".join(names()), boundary=".")
    X, Y = context_windows(words, tok, 4)
    want_x, want_y = [], []                                 # the windows, read straight off each padded name
    for w in words:
        s = "...." + w + "."
        for t in range(4, len(s)):
            want_x.append(tok.encode(s[t - 4:t])); want_y.append(tok.stoi[s[t]])
    assert X.tolist() == want_x and Y.tolist() == want_y and X.dtype == minidl.int64
    with pytest.raises(ValueError, match="needs a tokenizer with a boundary"): context_windows(words, CharTokenizer("abc"), 3)
