"""Character sequences as int64 tokens: LEAF's Shakespeare alphabet (Caldas et al. 2018).

LEAF's next-character task (``models/utils/language_utils.py``) encodes every character
by its position in an 80-symbol alphabet; a sample is an 80-character window and its
label the character that follows, so the task is classification over the 80 symbols
and next-token accuracy is plain accuracy. LEAF maps an unknown character to -1 (an
invalid embedding row); here it is an error naming the character instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: LEAF's alphabet, in LEAF's order: token i is ALPHABET[i]
ALPHABET = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
VOCAB_SIZE = len(ALPHABET)  # 80

# byte value -> token (-1 = not in the alphabet); the alphabet is ASCII
_LOOKUP = np.full(256, -1, dtype=np.int64)
_LOOKUP[np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(VOCAB_SIZE)


class UnknownCharacter(ValueError):
    """A character outside :data:`ALPHABET` (the message names it and where it is)."""


def encode(texts: Sequence[str], what: str = "text") -> np.ndarray:
    """Equal-length strings -> int64 ``(N, L)`` tokens (vectorised over the whole batch).

    ValueError (one line) if the lengths differ or a character is outside the alphabet.
    """
    n = len(texts)
    if n == 0:
        return np.zeros((0, 0), dtype=np.int64)
    lengths = {len(t) for t in texts}
    if len(lengths) != 1:
        raise ValueError(
            f"{what}: sequences must all have the same length (LEAF's Shakespeare: 80); "
            f"found lengths {sorted(lengths)[:5]}"
        )
    length = lengths.pop()
    joined = "".join(texts)
    try:
        raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError as exc:
        bad = joined[exc.start]
        raise UnknownCharacter(
            f"{what}: character {bad!r} (sample {exc.start // max(length, 1)}) is not in "
            f"LEAF's {VOCAB_SIZE}-character alphabet"
        ) from None
    tokens = _LOOKUP[raw]
    if (tokens < 0).any():
        pos = int(np.flatnonzero(tokens < 0)[0])
        raise UnknownCharacter(
            f"{what}: character {joined[pos]!r} (sample {pos // max(length, 1)}) is not in "
            f"LEAF's {VOCAB_SIZE}-character alphabet"
        )
    return tokens.reshape(n, length)


def encode_chars(chars: Iterable[str], what: str = "labels") -> np.ndarray:
    """Single characters (next-character labels) -> int64 ``(N,)`` tokens."""
    chars = list(chars)
    if any(not isinstance(c, str) or len(c) != 1 for c in chars):
        bad = next(c for c in chars if not isinstance(c, str) or len(c) != 1)
        raise ValueError(f"{what}: a next-character label must be one character, got {bad!r}")
    return encode(chars, what).reshape(-1)


def decode(tokens: Iterable[int]) -> str:
    """int tokens -> the string (for reading samples and tests)."""
    return "".join(ALPHABET[int(t)] for t in tokens)
