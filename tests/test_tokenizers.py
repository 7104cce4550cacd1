"""Tests for tinygrad_gpt/tokenizers/: the character tokenizer and the interface every tokenizer shares.

The BPE tokenizer's own tests are in test_bpe.py.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_gpt.tokenizers import BPETokenizer, CharTokenizer, build_tokenizer, tokenizer_from_dict

# Non-empty text from any Unicode characters (hypothesis leaves out lone surrogates by
# default; a separate test covers them).
texts = st.text(min_size=1, max_size=200)


@settings(deadline=None, max_examples=25)
@given(text=texts)
def test_encode_decode_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text  # decode also takes a plain list


@settings(deadline=None, max_examples=25)
@given(text=texts, data=st.data())
def test_ids_are_positions_in_chars_for_any_vocab_order(text, data):
    # The vectorized encoder goes through a sorted copy of the vocabulary; a vocabulary
    # given in a shuffled order checks that it maps back to the right ids.
    chars = data.draw(st.permutations(sorted(set(text))))
    tok = CharTokenizer("".join(chars))
    expected = [chars.index(ch) for ch in text]
    assert tok.encode(text).tolist() == expected


def test_from_text_vocab_is_sorted_distinct_chars():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    assert tok.vocab_size == 8
    assert tok.encode("hold").tolist() == [3, 5, 4, 1]


def test_astral_characters_and_lone_surrogates_round_trip():
    # Code points above U+FFFF and lone surrogates are single characters of a Python
    # str; each must be one token.
    text = "a\U0001F600b\ud800c\U0001F600"
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 5
    assert tok.encode(text).shape == (len(text),)
    assert tok.decode(tok.encode(text)) == text


def test_encode_empty_string_gives_empty_int64_array():
    ids = CharTokenizer.from_text("abc").encode("")
    assert ids.dtype == np.int64 and ids.shape == (0,)
    assert CharTokenizer.from_text("abc").decode([]) == ""


def test_unknown_characters_raise_naming_them():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"not in the tokenizer's vocabulary of 3 characters") as info:
        tok.encode("abxcy\x00")
    message = str(info.value)
    for ch in ("'x'", "'y'", "'\\x00'"):
        assert ch in message
    assert "'a'" not in message  # known characters are not blamed


def test_unknown_characters_above_the_largest_code_point_are_caught():
    # The searchsorted lookup sends a code point beyond the largest vocabulary entry past
    # the end of the array; it must still be reported, not wrapped onto a real token.
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("z")


def test_many_unknown_characters_are_summarized():
    tok = CharTokenizer.from_text("a")
    with pytest.raises(ValueError, match=r"10 distinct character\(s\).*and 5 more"):
        tok.encode("bcdefghijk")


def test_decode_rejects_bad_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[3\]"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match=r"\[-1\]"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        tok.decode([0.0, 1.0])


def test_to_dict_from_dict_round_trip_through_json():
    # Shuffled, non-ASCII vocabulary: the restored tokenizer must keep the exact order.
    tok = CharTokenizer("zé\n a\U0001F600")
    d = json.loads(json.dumps(tok.to_dict()))
    assert d == {"type": "char", "chars": "zé\n a\U0001F600"}
    restored = CharTokenizer.from_dict(d)
    assert restored == tok
    assert restored.encode("a z\n").tolist() == tok.encode("a z\n").tolist() == [4, 3, 0, 2]


@pytest.mark.parametrize(
    "d, error, pattern",
    [
        (["char", "abc"], TypeError, "must be a dict"),
        ({"type": "bpe", "chars": "abc"}, ValueError, "type 'bpe', expected 'char'"),
        ({"chars": "abc"}, ValueError, "exactly the keys"),
        ({"type": "char", "chars": "abc", "extra": 1}, ValueError, "exactly the keys"),
        ({"type": "char", "chars": ""}, ValueError, "non-empty"),
        ({"type": "char", "chars": "abca"}, ValueError, "'a' appear more than once"),
        ({"type": "char", "chars": ["a", "b"]}, TypeError, "must be a str"),
    ],
)
def test_from_dict_rejects_bad_input(d, error, pattern):
    with pytest.raises(error, match=pattern):
        CharTokenizer.from_dict(d)


def test_from_text_rejects_empty_and_non_str():
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer.from_text("")
    with pytest.raises(TypeError, match="must be a str"):
        CharTokenizer.from_text(b"abc")


# ----- the interface every tokenizer shares -----

CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


@pytest.fixture(params=["char", "bpe"])
def any_tokenizer(request):
    if request.param == "char":
        return CharTokenizer.from_text(CORPUS)
    return BPETokenizer.train(CORPUS, vocab_size=280)


def test_every_tokenizer_has_the_shared_interface(any_tokenizer):
    ids = any_tokenizer.encode(CORPUS)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert 0 <= ids.min() and ids.max() < any_tokenizer.vocab_size
    assert any_tokenizer.decode(ids) == any_tokenizer.decode(ids.tolist()) == CORPUS
    assert any_tokenizer.eot_token is None or 0 <= any_tokenizer.eot_token < any_tokenizer.vocab_size


def test_tokenizer_from_dict_rebuilds_either_type_through_json(any_tokenizer):
    restored = tokenizer_from_dict(json.loads(json.dumps(any_tokenizer.to_dict())))
    assert type(restored) is type(any_tokenizer) and restored == any_tokenizer
    assert restored.encode(CORPUS).tolist() == any_tokenizer.encode(CORPUS).tolist()
    assert restored.eot_token == any_tokenizer.eot_token


def test_eot_token_is_none_for_chars_and_the_end_of_text_id_for_bpe():
    assert CharTokenizer.from_text(CORPUS).eot_token is None
    bpe = BPETokenizer.train(CORPUS, vocab_size=280)
    assert bpe.eot_token == 279 and bpe.special_tokens == {"<|endoftext|>": 279}


@pytest.mark.parametrize(
    "d, pattern",
    [
        ({"chars": "abc"}, "must be a dict with a 'type' key"),
        ("char", "must be a dict with a 'type' key"),
        ({"type": "wordpiece"}, r"unknown tokenizer type 'wordpiece'; known types are \['bpe', 'char'\]"),
    ],
)
def test_tokenizer_from_dict_rejects_unknown_descriptions(d, pattern):
    with pytest.raises(ValueError, match=pattern):
        tokenizer_from_dict(d)


def test_build_tokenizer_by_name_or_directory(tmp_path):
    assert build_tokenizer("char", CORPUS) == CharTokenizer.from_text(CORPUS)
    trained = build_tokenizer("bpe", CORPUS, vocab_size=280)
    assert trained == BPETokenizer.train(CORPUS, vocab_size=280) and trained.vocab_size == 280
    trained.save(tmp_path)
    assert build_tokenizer(str(tmp_path), "text it does not read") == trained


def test_build_tokenizer_names_what_it_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'char', 'bpe' or a directory holding vocab.json and merges.txt"):
        build_tokenizer(str(tmp_path / "missing"), CORPUS)
    with pytest.raises(FileNotFoundError, match="got 'bpe2'"):
        build_tokenizer("bpe2", CORPUS)
