"""Tests for tinygrad_gpt/tokenizers/ bpe.py, bpe_train.py and bytelevel.py: GPT-2's byte-level BPE.

Three independent oracles: tiktoken encoding with GPT-2's real vocabulary files (built
offline from ../shared/data/gpt2), Hugging Face's ``tokenizers`` loading the files that
``save`` writes, and a slow trainer in this file that recounts every pair before every
merge. Each skips with its reason when its library or data is absent.
"""

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from shared_data import gpt2_vocabulary_files

from tinygrad_gpt.tokenizers import BPETokenizer, tokenizer_from_dict
from tinygrad_gpt.tokenizers.bpe_merge import merge_pieces, merge_pieces_ref
from tinygrad_gpt.tokenizers.bpe_train import learn_merges
from tinygrad_gpt.tokenizers.bytelevel import BYTE_TO_CHAR, BYTES_IN_ID_ORDER, GPT2_SPLIT, GPT2_SPLIT_PATTERN

# Text that exercises every branch of GPT-2's pre-tokenization and of UTF-8.
VARIED_TEXTS = {
    "prose": "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.",
    "code": 'def f(x):\n\tif x >= 10:  # big\n\t\treturn {"a": [1, 2]}\n    return x ** 2 != -3\n',
    "whitespace runs": "a  b   c\t\t d\n\n\n e \r\n f\u00a0\u00a0g\u3000h   \n  ",
    "contractions, both cases": "I'm it's we're they've I'd you'll can't I'M IT'S WE'RE THEY'VE I'D YOU'LL CAN'T 'tis",
    "numbers in several scripts": "1234567 3.14 ٣٤٥٦ १२३ ১২৩ １２３ Ⅻ ½ ²³ 〇一二 ๑๒",
    "accents and combining marks": "café naïve Ærøskøbing e\u0301 a\u0308\u0323 Zalgo: Z\u0351\u0354\u0350a\u0352l\u0353g\u0357o",
    "CJK": "日本語のテキスト、中文文本。한국어 텍스트! 東京タワー",
    "emoji and ZWJ sequences": "hi 👋🏽 👨\u200d👩\u200d👧\u200d👦 🏳\ufe0f\u200d🌈 ❤\ufe0f 🇫🇷 1\ufe0f\u20e3",
    "controls and odd bytes": "\x00\x01\x7f\u0085 \u2028\u2029\ufeff<|endoftext|-ish|>",
}

# A small corpus for training tests: fast, and it gives merges of several lengths.
SMALL_CORPUS = (
    "the cat sat on the mat. The cat's hat is flat; that cat sat flat on that mat!\n"
    "  tic tac toe 1234 12 34 -- café café naïve 日本 日本語\n"
) * 3


@pytest.fixture(scope="module")
def gpt2():
    encoder_json, vocab_bpe = gpt2_vocabulary_files()
    return BPETokenizer.from_files(encoder_json, vocab_bpe)


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    """tiktoken's encoder over the same files: an independent (Rust) implementation, no network."""
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken (optional test dependency) is not installed")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder_json, vocab_bpe = gpt2_vocabulary_files()
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding(
        "gpt2-offline", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256}
    )


@pytest.fixture(scope="module")
def small():
    return BPETokenizer.train(SMALL_CORPUS, vocab_size=300)


# ----- the byte map and the pre-tokenization -----


def test_byte_map_is_gpt2s_printable_bijection():
    chars = [BYTE_TO_CHAR[byte] for byte in range(256)]
    assert len(set(chars)) == 256
    assert not any(char.isspace() or not char.isprintable() for char in chars)
    assert (BYTE_TO_CHAR[ord("a")], BYTE_TO_CHAR[ord(" ")], BYTE_TO_CHAR[0], BYTE_TO_CHAR[ord("\n")]) == (
        "a",
        "Ġ",
        "Ā",
        "Ċ",
    )


def test_byte_map_matches_gpt2s_single_character_tokens():
    encoder_json, _ = gpt2_vocabulary_files()
    encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    # GPT-2's ids 0..255 are the 256 byte characters, in the order BYTES_IN_ID_ORDER says.
    assert [encoder[BYTE_TO_CHAR[byte]] for byte in BYTES_IN_ID_ORDER] == list(range(256))


def test_pre_tokenization_splits_as_gpt2():
    assert GPT2_SPLIT.findall("I'm   here 123 x'S DON'T they'll") == [
        "I", "'m", "  ", " here", " 123", " x", "'", "S", " DON", "'", "T", " they", "'ll",
    ]  # fmt: skip
    # The last space of a whitespace run goes with the next word; trailing whitespace stays whole.
    assert GPT2_SPLIT.findall("a\n\n  b\t c  ") == ["a", "\n\n ", " b", "\t", " c", "  "]


# ----- GPT-2's real vocabulary against tiktoken -----


def test_gpt2_vocabulary_loads_with_its_end_of_text_token(gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.eot_token == 50256 and gpt2.special_tokens == {"<|endoftext|>": 50256}
    assert gpt2.encode("Hello world").tolist() == [15496, 995]


@pytest.mark.parametrize("name", sorted(VARIED_TEXTS))
def test_gpt2_encoding_matches_tiktoken(gpt2, tiktoken_gpt2, name):
    text = VARIED_TEXTS[name]
    ids = gpt2.encode(text, disallowed_special=())
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids.tolist() == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.decode(ids) == text


@given(text=st.text(max_size=300))
def test_gpt2_encoding_matches_tiktoken_on_any_text(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text, disallowed_special=()).tolist() == tiktoken_gpt2.encode_ordinary(text)


def test_gpt2_encoding_of_shakespeare_matches_tiktoken(gpt2, tiktoken_gpt2):
    encoder_json, _ = gpt2_vocabulary_files()
    shakespeare = encoder_json.parents[1] / "tinyshakespeare.txt"
    if not shakespeare.is_file():
        pytest.skip(f"{shakespeare} is not on this machine")
    text = shakespeare.read_text(encoding="utf-8")[:200_000]
    assert gpt2.encode(text).tolist() == tiktoken_gpt2.encode_ordinary(text)


def test_special_tokens_follow_tiktoken(gpt2, tiktoken_gpt2):
    text = "one<|endoftext|>two <|endoftext|>"
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*allowed_special"):
        gpt2.encode(text)
    with pytest.raises(ValueError):  # tiktoken refuses it too
        tiktoken_gpt2.encode(text)
    as_ids = gpt2.encode(text, allowed_special="all").tolist()
    assert as_ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert as_ids.count(50256) == 2
    assert gpt2.encode(text, allowed_special={"<|endoftext|>"}).tolist() == as_ids
    as_text = gpt2.encode(text, disallowed_special=()).tolist()
    assert as_text == tiktoken_gpt2.encode(text, disallowed_special=()) and 50256 not in as_text
    assert gpt2.decode(as_ids) == gpt2.decode(as_text) == text


def test_allowed_special_must_name_special_tokens(gpt2):
    with pytest.raises(ValueError, match=r"allowed_special names \['<\|im_start\|>'\]"):
        gpt2.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(TypeError, match="'all' or a collection"):
        gpt2.encode("x", allowed_special="<|endoftext|>")


def test_decode_replaces_invalid_utf8_as_gpt2(gpt2, tiktoken_gpt2):
    ids = gpt2.encode("日本").tolist()
    byte_token = gpt2.vocab[BYTE_TO_CHAR[0xE6]]  # a lone lead byte of a 3-byte character
    for broken in ([byte_token], [byte_token, *ids], ids + [byte_token]):
        assert gpt2.decode(broken) == tiktoken_gpt2.decode(broken)
    assert gpt2.decode([byte_token]) == "\ufffd"


def test_decode_rejects_ids_outside_the_vocabulary(gpt2):
    with pytest.raises(ValueError, match=r"\[0, 50257\).*\[50257\]"):
        gpt2.decode([1, 50257])
    with pytest.raises(ValueError, match=r"\[-1\]"):
        gpt2.decode(np.array([-1]))
    with pytest.raises(ValueError, match="1-D"):
        gpt2.decode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        gpt2.decode([0.5])


# ----- the compiled merge loop against its reference -----


def merge_both_ways(tok, text):
    pieces = [piece.encode("utf-8") for piece in GPT2_SPLIT.findall(text)]
    table = (tok._byte_ids, tok._pair_keys, tok._pair_ranks, tok._merged_id_of_rank, tok.vocab_size)
    return merge_pieces(pieces, *table), merge_pieces_ref(pieces, *table)


def test_compiled_merges_match_the_reference_on_gpt2(gpt2):
    compiled, reference = merge_both_ways(gpt2, "".join(VARIED_TEXTS.values()))
    assert compiled == reference and max(map(len, reference)) > 1


@given(text=st.text(alphabet="ab \n!é", max_size=120))
def test_compiled_merges_match_the_reference_on_any_text(small, text):
    compiled, reference = merge_both_ways(small, text)
    assert compiled == reference


def test_a_pair_listed_twice_merges_at_its_lower_rank():
    vocab = byte_vocab("ab", "abc")
    # ("a", "b") again at rank 2 must not change anything: rank 0 applies first.
    tok = BPETokenizer(vocab, [("a", "b"), ("ab", "c"), ("a", "b")])
    assert tok.encode("abcab").tolist() == [257, 256]


# ----- round trips -----


@given(text=st.text())
def test_decode_inverts_encode_for_any_string(small, text):
    assert small.decode(small.encode(text, disallowed_special=())) == text


@given(text=st.text())
def test_decode_inverts_encode_for_any_string_with_gpt2(gpt2, text):
    assert gpt2.decode(gpt2.encode(text, disallowed_special=())) == text


def test_encode_empty_and_lone_surrogate(small):
    empty = small.encode("")
    assert empty.dtype == np.int64 and empty.shape == (0,)
    assert small.decode([]) == ""
    with pytest.raises(ValueError, match="lone surrogate '\\\\ud800'"):
        small.encode("ab\ud800c")


def test_to_dict_round_trips_through_json(small):
    d = json.loads(json.dumps(small.to_dict()))
    assert d["type"] == "bpe"
    restored = tokenizer_from_dict(d)
    assert isinstance(restored, BPETokenizer) and restored == small
    assert restored.eot_token == small.eot_token == 299
    assert restored.encode(SMALL_CORPUS).tolist() == small.encode(SMALL_CORPUS).tolist()


def test_save_then_from_files_gives_the_same_tokenizer(small, tmp_path):
    vocab_path, merges_path = small.save(tmp_path / "tok")
    assert (vocab_path.name, merges_path.name) == ("vocab.json", "merges.txt")
    assert merges_path.read_text(encoding="utf-8").splitlines()[0] == "#version: 0.2"
    assert BPETokenizer.from_files(vocab_path, merges_path) == small


def test_saved_files_load_in_hugging_face_tokenizers_and_encode_identically(tmp_path):
    hf = pytest.importorskip("tokenizers", reason="tokenizers (optional test dependency) is not installed")
    tok = BPETokenizer.train(SMALL_CORPUS + "".join(VARIED_TEXTS.values()), vocab_size=400)
    vocab_path, merges_path = tok.save(tmp_path)
    theirs = hf.Tokenizer(hf.models.BPE.from_file(str(vocab_path), str(merges_path)))
    theirs.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    theirs.decoder = hf.decoders.ByteLevel()
    for text in [SMALL_CORPUS, *VARIED_TEXTS.values(), "unseen words: zebra quixotic ǅ 😀"]:
        ids = tok.encode(text, disallowed_special=()).tolist()
        assert theirs.encode(text).ids == ids
        assert theirs.decode(ids) == text


# ----- training -----


def test_training_merges_the_most_frequent_pair_with_the_documented_tie_rule():
    # Pieces "abab", " abab", " ab". (a,b) occurs 5 times. Then (' ', ab) and (ab, ab)
    # both occur twice: the smaller left id (space, GPT-2's 220) wins over ab (256). Then
    # (ab, ab) and (Ġab, ab) once each: ab (256) < Ġab (257). Then the last pair; then
    # none is left, so the vocabulary stops short of the 300 asked for.
    tok = BPETokenizer.train("abab abab ab", vocab_size=300)
    assert (tok.vocab["a"], tok.vocab["Ġ"]) == (64, 220)  # GPT-2's byte ids
    assert tok.merges == [("a", "b"), ("Ġ", "ab"), ("ab", "ab"), ("Ġab", "ab")]
    assert tok.vocab_size == 256 + 4 + 1 and tok.special_tokens == {"<|endoftext|>": 260}
    assert tok.encode("abab ab").tolist() == [258, 257]


def recounting_merges(text, num_merges):
    """The slow textbook trainer: recount every pair of every piece before each merge."""
    words = [[BYTES_IN_ID_ORDER.index(byte) for byte in piece.encode("utf-8")] for piece in GPT2_SPLIT.findall(text)]
    merges = []
    for new_id in range(256, 256 + num_merges):
        counts = Counter(pair for word in words for pair in zip(word, word[1:]))
        if not counts:
            break
        # Most frequent first; among equals the smallest (left id, right id).
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for index, word in enumerate(words):
            merged, i = [], 0
            while i < len(word):
                if word[i : i + 2] == list(best):
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            words[index] = merged
    return merges


@given(text=st.text(alphabet="ab \n!é", max_size=120), num_merges=st.integers(0, 40))
def test_incremental_counts_give_the_recounting_trainers_merges(text, num_merges):
    # A small alphabet makes overlapping pairs ("aaa") and long runs likely.
    assert learn_merges([text], num_merges) == recounting_merges(text, num_merges)


def test_incremental_counts_give_the_recounting_trainers_merges_on_prose():
    assert learn_merges([SMALL_CORPUS], 60) == recounting_merges(SMALL_CORPUS, 60)


def test_training_learns_hugging_face_trainers_merges_in_the_same_order():
    hf = pytest.importorskip("tokenizers", reason="tokenizers (optional test dependency) is not installed")
    text = SMALL_CORPUS + "".join(VARIED_TEXTS.values())
    theirs = hf.Tokenizer(hf.models.BPE())
    theirs.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = hf.trainers.BpeTrainer(
        vocab_size=500,
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    theirs.train_from_iterator([text], trainer)
    their_merges = [
        tuple(merge) if isinstance(merge, list) else tuple(merge.split(" "))  # the JSON format changed in 0.20
        for merge in json.loads(theirs.to_str())["model"]["merges"]
    ]
    ours = BPETokenizer.train(text, vocab_size=500)
    assert len(ours.merges) == 243 and ours.merges == their_merges


def test_training_never_merges_across_or_into_special_tokens():
    tok = BPETokenizer.train("ab<|endoftext|>ab<|endoftext|>ab", vocab_size=300)
    assert tok.merges == [("a", "b")]
    assert tok.encode("ab<|endoftext|>", allowed_special="all").tolist() == [256, tok.eot_token]


def test_training_without_special_tokens_has_no_eot(small):
    tok = BPETokenizer.train(SMALL_CORPUS, vocab_size=270, special_tokens=())
    assert tok.vocab_size == 270 and tok.eot_token is None and tok.special_tokens == {}
    assert tok.merges == small.merges[:14]  # the same text learns the same first merges


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"vocab_size": 256}, ValueError, r"at least 256 bytes \+ 1 special token\(s\) = 257, got 256"),
        ({"vocab_size": 300.0}, ValueError, "vocab_size must be an int"),
        ({"vocab_size": 300, "special_tokens": "<|endoftext|>"}, TypeError, "list of non-empty str"),
        ({"vocab_size": 300, "special_tokens": ["<a>", "<a>"]}, ValueError, "must not repeat"),
        ({"vocab_size": 300, "special_tokens": ["a"]}, ValueError, "'a' is also the string of an ordinary token"),
    ],
)
def test_train_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        BPETokenizer.train("ab ab ab", **kwargs)


# ----- bad files and descriptions -----


def write_files(directory, vocab_text, merges_text):
    (directory / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    return directory / "vocab.json", directory / "merges.txt"


def byte_vocab(*extra):
    vocab = {BYTE_TO_CHAR[byte]: byte for byte in range(256)}
    for token in extra:
        vocab[token] = len(vocab)
    return vocab


@pytest.mark.parametrize("merges", ["a b\n", "a b", "#version: 0.2\r\na b\r\n"])
def test_from_files_reads_merges_with_or_without_version_line_and_windows_line_ends(tmp_path, merges):
    vocab_path, merges_path = write_files(tmp_path, json.dumps(byte_vocab("ab")), merges)
    assert BPETokenizer.from_files(vocab_path, merges_path).encode("abab").tolist() == [256, 256]


@pytest.mark.parametrize(
    "vocab, merges, pattern",
    [
        ('{"a": 0,\n "b": }', "#version: 0.2\n", r"vocab\.json line 2: not valid JSON"),
        ("[1, 2]", "", r"vocab\.json must hold a JSON object"),
        (json.dumps({"a": 0}), "", r"vocab\.json: vocab lacks 255 of the 256 byte tokens"),
        (json.dumps({**byte_vocab(), "ab": 300}), "", r"vocab\.json: vocab ids must be the distinct integers 0\.\.256, but id 256 is missing"),
        (json.dumps(byte_vocab("ab")), "#version: 0.2\na b\nab\n", r"merges\.txt line 3: expected two tokens separated by one space, got 'ab'"),
        (json.dumps(byte_vocab("ab")), "#version: 0.2\na  b\n", r"merges\.txt line 2: expected two tokens"),
        (json.dumps(byte_vocab("ab")), "#version: 0.2\na b\nab c\n", r"merges\.txt line 3: merge \('ab', 'c'\) needs the token 'abc', which is not in the vocabulary of .*vocab\.json"),
        (json.dumps(byte_vocab("ab", "abc", "bc")), "ab c\na b\nb c\n", r"merges\.txt: merge 0 \('ab', 'c'\) uses the token 'ab' before any lower-ranked merge makes it"),
    ],
)  # fmt: skip
def test_from_files_rejects_malformed_or_disagreeing_files(tmp_path, vocab, merges, pattern):
    with pytest.raises(ValueError, match=pattern):
        BPETokenizer.from_files(*write_files(tmp_path, vocab, merges))


def test_from_files_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json does not exist"):
        BPETokenizer.from_files(tmp_path / "nowhere.json", tmp_path / "merges.txt")


@pytest.mark.parametrize(
    "d, error, pattern",
    [
        ("bpe", TypeError, "must be a dict"),
        ({"type": "bpe", "vocab": {}}, ValueError, "exactly the keys"),
        ({"type": "char", "vocab": {}, "merges": []}, ValueError, "type 'char', expected 'bpe'"),
        ({"type": "bpe", "vocab": [], "merges": []}, TypeError, "vocab must be a dict"),
        ({"type": "bpe", "vocab": byte_vocab(), "merges": [["a"]]}, ValueError, r"merge 0 \('a',\) is not a pair"),
    ],
)
def test_from_dict_rejects_bad_descriptions(d, error, pattern):
    with pytest.raises(error, match=pattern):
        BPETokenizer.from_dict(d)
