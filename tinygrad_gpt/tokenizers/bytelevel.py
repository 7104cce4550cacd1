"""The two fixed pieces of GPT-2's byte-level BPE that come before any merge.

Pre-tokenization: GPT-2 never merges across the boundaries of a regular expression that
splits text into words with their leading space, runs of digits, runs of punctuation,
runs of whitespace, and English contractions. BPE then works inside each piece, so a
token never spans "dog." or "dog dog". ``\\p{L}`` (any letter) and ``\\p{N}`` (any
number) need the ``regex`` package; Python's ``re`` has no Unicode property classes.

The byte-to-unicode map: BPE works on the UTF-8 bytes of each piece, but GPT-2's files
store tokens as text. Each of the 256 bytes is given one printable character: bytes that
already print as themselves in Latin-1 keep their character, and the rest (control
bytes, space, and a few others) are shifted to the characters from U+0100 on, so that a
token's string in ``vocab.json`` never contains whitespace or control characters. A
space becomes 'Ġ' (U+0120), which is why GPT-2's word tokens start with 'Ġ'.
"""

import regex

# GPT-2's pre-tokenization pattern, alternative by alternative: the contractions 's 't
# 're 've 'm 'll 'd (lower case only, as GPT-2 had it); an optional space then letters;
# an optional space then numbers; an optional space then anything that is neither
# whitespace, letter nor number; whitespace not followed by a non-space (so the last
# space of a run is left to start the next word); any remaining whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

GPT2_SPLIT = regex.compile(GPT2_SPLIT_PATTERN)


def bytes_to_unicode():
    """GPT-2's map from each byte value 0..255 to the one character that stands for it.

    >>> table = bytes_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[0]
    ('a', 'Ġ', 'Ā')
    """
    # Bytes whose Latin-1 character is printable and not a space stand for themselves.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    char_of_byte = {byte: chr(byte) for byte in printable}
    # The other 68 bytes take U+0100, U+0101, ... in byte order.
    shifted = [byte for byte in range(256) if byte not in char_of_byte]
    for offset, byte in enumerate(shifted):
        char_of_byte[byte] = chr(256 + offset)
    return dict(sorted(char_of_byte.items()))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {char: byte for byte, char in BYTE_TO_CHAR.items()}
# The ids GPT-2 gives the 256 single-byte tokens: byte BYTES_IN_ID_ORDER[i] is token i,
# which is the bytes sorted by their characters (the printable ones first, in byte order,
# then the shifted ones). Hugging Face's trainer numbers its byte alphabet the same way.
BYTES_IN_ID_ORDER = sorted(range(256), key=BYTE_TO_CHAR.__getitem__)
