"""Vectorised building blocks shared by the schemes (private).

Every scheme decides *how many* samples (of each class) each party gets, then the index
arrays are materialised once, here, with a few O(N) numpy passes and at most two sorts
(a sort of packed 62-bit keys and a radix sort on 16-bit party ids), never a Python
loop over samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_U16 = 1 << 16
# shuffled_class_blocks' keys: 62 bits (so they sort as positive doubles); at least 24
# random bits, otherwise it shuffles class by class
_KEY_BITS = 62
_MIN_RANDOM_BITS = 24


def small_uint(n_values: int) -> type[np.unsignedinteger] | type[np.signedinteger]:
    """The dtype for ids 0..n_values-1: uint16 (numpy radix-sorts it) when it fits."""
    return np.uint16 if n_values <= _U16 else np.int64


def class_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, sizes)``: the distinct labels (ascending) and their sample counts."""
    if int(labels.max()) < 2 * labels.size + _U16:
        counts = np.bincount(labels)
        classes = np.flatnonzero(counts)
        return classes, counts[classes]
    return np.unique(labels, return_counts=True)


def _class_codes(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Labels as class ranks 0..K-1 (the labels themselves when they already are)."""
    if int(classes[-1]) == len(classes) - 1:
        return labels
    return np.searchsorted(classes, labels)


def class_blocks(labels: np.ndarray) -> np.ndarray:
    """Indices grouped by class (ascending label), in their input order within a class."""
    if int(labels.max()) < _U16:
        key = labels.astype(np.uint16)  # a 16-bit key makes numpy's stable sort a radix sort
    else:
        key = np.unique(labels, return_inverse=True)[1].reshape(-1)
    return np.argsort(key, kind="stable")


def shuffled_class_blocks(
    labels: np.ndarray,
    rng: np.random.Generator,
    classes: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices grouped by class (ascending label), uniformly shuffled within each class.

    One in-place sort of packed 62-bit keys ``class | random | index``. The random
    field orders each class uniformly as long as no two samples of a class draw the same
    value; that is checked and the keys redrawn if it happens (probability about
    n_k^2 / 2^(bits+1), bits >= 24), so the order is exactly uniform. When the key has
    too few bits for the random field (huge N and K), each class block is shuffled.
    """
    n = labels.size
    if classes is None or sizes is None:
        classes, sizes = class_sizes(labels)
    ib = max(1, (n - 1).bit_length())
    cb = max(1, (len(classes) - 1).bit_length())
    rb = _KEY_BITS - ib - cb
    if rb < _MIN_RANDOM_BITS:
        order = class_blocks(labels)
        ends = np.cumsum(sizes)
        for start, end in zip((ends - sizes).tolist(), ends.tolist()):
            rng.shuffle(order[start:end])
        return order
    codes = _class_codes(labels, classes)
    low = np.uint64((1 << ib) - 1)
    # in place in two N-sized buffers: at N ~ 1e5 fresh allocations cost as much as the
    # arithmetic
    tmp = np.empty(n, dtype=np.uint64)
    while True:
        key = rng.bit_generator.random_raw(n)  # uniform uint64
        key >>= np.uint64(64 - _KEY_BITS + cb)  # rb + ib random bits ...
        key &= ~low  # ... of which the low ib make room for the index
        tmp.fill(1)
        tmp[0] = 0
        np.cumsum(tmp, out=tmp)  # 0..n-1 without a third buffer
        key |= tmp
        np.left_shift(codes.view(np.uint64), np.uint64(ib + rb), out=tmp)
        key |= tmp
        # keys < 2^62 are ordered like the finite positive doubles with the same bits,
        # and numpy sorts float64 ~20% faster than uint64
        key.view(np.float64).sort()
        np.right_shift(key, np.uint64(ib), out=tmp)
        if not (tmp[1:] == tmp[:-1]).any():
            break
    del tmp
    key &= low
    return key.view(np.int64)


def split_sorted(order: np.ndarray, sizes: np.ndarray) -> dict[int, np.ndarray]:
    """``{j: order[o_j : o_j + sizes[j]]}``: consecutive views of ``order``."""
    bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()
    return {j: order[bounds[j] : bounds[j + 1]] for j in range(len(sizes))}


def dataidxs_from_assignment(
    assign: np.ndarray, n_parties: int, sizes: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """``assign[i]`` = party of sample i, or ``n_parties`` for "left out" -> party ->
    int64 indices sorted ascending (a stable counting sort of the sample ids by party).
    ``sizes``: the per-party counts when the caller already knows them."""
    order = np.argsort(assign, kind="stable").astype(np.int64, copy=False)
    if sizes is None:
        sizes = np.bincount(assign, minlength=n_parties + 1)
    return split_sorted(order, np.asarray(sizes)[:n_parties])


def dataidxs_from_class_counts(
    labels: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    classes: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Give party j ``counts[k, j]`` samples of class k, drawn uniformly at random without
    replacement from that class; samples beyond ``counts[k].sum()`` are left out.

    ``counts`` is ``K x n_parties`` over the distinct labels in ascending order (see
    :func:`class_sizes`). Same law as NIID-Bench's "shuffle the class indices and cut
    them at the cumulative counts". ``classes, sizes``: :func:`class_sizes` of
    ``labels`` when the caller has them.
    """
    if classes is None or sizes is None:
        classes, sizes = class_sizes(labels)
    n_parties = counts.shape[1]
    full = np.empty((len(sizes), n_parties + 1), dtype=np.int64)
    full[:, :n_parties] = counts
    full[:, n_parties] = sizes - counts.sum(axis=1)
    if (full < 0).any():
        raise ValueError("internal: class counts exceed the class sizes")
    dtype = small_uint(n_parties + 1)
    party_seq = np.repeat(np.tile(np.arange(n_parties + 1, dtype=dtype), len(sizes)), full.ravel())
    assign = np.empty(labels.size, dtype=dtype)
    assign[shuffled_class_blocks(labels, rng, classes, sizes)] = party_seq
    del party_seq
    return dataidxs_from_assignment(assign, n_parties, full.sum(axis=0))


def redraw_batches(max_redraws: int, draw_cost: int) -> Iterator[int]:
    """Sizes of successive batches of candidate draws, summing to ``max_redraws``.

    Schemes that redraw until a condition holds (every party >= min_size) test a batch
    of candidate draws at once, vectorised; a draw costs ``draw_cost`` random numbers.
    The first batch is one draw when draws are expensive, a few when they are cheap;
    then the batch doubles, capped so a batch holds at most ~1M numbers.
    """
    batch = int(np.clip(4096 // max(draw_cost, 1), 1, 64))
    cap = max(1, (1 << 20) // max(draw_cost, 1))
    left = max_redraws
    while left > 0:
        b = min(batch, left)
        yield b
        left -= b
        batch = max(1, min(2 * batch, cap))
