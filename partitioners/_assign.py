"""Vectorised building blocks shared by the schemes (private).

Every scheme decides *how many* samples (of each class) each party gets, then the index
arrays are materialised once, here, with a few O(N) numpy passes and at most two sorts
of packed integer keys ``high << bits | sample id`` (32-bit when they fit: numpy's
vectorised sort of a uint32 array is ~2.5x faster than a stable argsort of the high
part), never a Python loop over samples.

Memory: at N = 50,000 a call's time is ~1 ms, and extra N-sized temporaries cost more
than their arithmetic: once a call's peak heap use passes malloc's trim threshold, the
pages go back to the OS and the next call pays page faults. So 32-bit sort keys live
in the bytes of the int64 result where they can, and most passes are in place.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_U16 = 1 << 16
# packed keys up to 32 bits sort as uint32; up to 62 bits as the finite positive doubles
# with the same bits (same order, and numpy sorts float64 ~20% faster than uint64)
_SHORT_BITS = 32
_LONG_BITS = 62
# the random-order key is 32 bits wide while its random field leaves at most this many
# samples of a class per random value on average (ties are resolved exactly, at a cost
# that grows with them); otherwise 62 bits, where ties are rare
_MAX_TIES = 2


def small_uint(n_values: int) -> type[np.unsignedinteger] | type[np.signedinteger]:
    """The dtype for ids 0..n_values-1: uint16 when it fits."""
    return np.uint16 if n_values <= _U16 else np.int64


def _bits(n_values: int) -> int:
    """Bits that hold 0..n_values-1 (at least 1)."""
    return max(1, (int(n_values) - 1).bit_length())


def _key_dtype(bits: int) -> type[np.unsignedinteger] | None:
    if bits <= _SHORT_BITS:
        return np.uint32
    if bits <= _LONG_BITS:
        return np.uint64
    return None


def _sort_keys(key: np.ndarray) -> None:
    """Sort packed keys in place (uint64 ones through their float64 view, see above)."""
    if key.dtype == np.uint64:
        key.view(np.float64).sort()
    else:
        key.sort()


def _key_space(out: np.ndarray, dtype: type, half: int) -> np.ndarray:
    """Room for ``out.size`` keys of ``dtype``: for uint32, the low (``half=0``) or upper
    (``half=1``) half of the int64 ``out``'s own bytes, else a fresh array."""
    n = out.size
    if dtype is np.uint32:
        return out.view(np.uint32)[half * n : (half + 1) * n]
    return np.empty(n, dtype=dtype)


def _sorted_ids_into(key: np.ndarray, ib: int, out: np.ndarray) -> np.ndarray:
    """Sort the packed ``key`` in place and write its low ``ib`` bits (the sample ids)
    into the int64 ``out``, which may be the very bytes of a 32-bit ``key`` (its low
    half): then the widening runs from the top in halving chunks, each reading bytes
    below those it writes, so no chunk overlaps what it reads or what is still unread."""
    _sort_keys(key)
    mask = key.dtype.type((1 << ib) - 1)
    hi = key.size
    shared = key.base is out
    while hi > 0:
        lo = (hi + 1) // 2 if shared and hi > 1 else 0
        np.bitwise_and(key[lo:hi], mask, out=out[lo:hi], dtype=key.dtype, casting="unsafe")
        hi = lo
    return out


def sort_by_group(group: np.ndarray, group_bits: int) -> np.ndarray:
    """The sample ids 0..n-1 stably sorted by ``group`` (values < ``2**group_bits``), as
    int64: one sort of the packed keys ``group << bits(n) | id``."""
    n = group.size
    ib = _bits(n)
    dtype = _key_dtype(group_bits + ib)
    if dtype is None:  # astronomically many (group, id) pairs
        return np.argsort(group, kind="stable").astype(np.int64, copy=False)
    out = np.empty(n, dtype=np.int64)
    key = _key_space(out, dtype, 0)
    np.left_shift(group, ib, out=key, dtype=dtype, casting="unsafe")
    np.bitwise_or(key, np.arange(n, dtype=dtype), out=key)
    return _sorted_ids_into(key, ib, out)


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
    classes, _ = class_sizes(labels)
    return sort_by_group(_class_codes(labels, classes), _bits(len(classes)))


def split_sorted(order: np.ndarray, sizes: np.ndarray) -> dict[int, np.ndarray]:
    """``{j: order[o_j : o_j + sizes[j]]}``: consecutive views of ``order``."""
    bounds = np.concatenate(([0], np.cumsum(sizes))).tolist()
    return {j: order[bounds[j] : bounds[j + 1]] for j in range(len(sizes))}


def dataidxs_from_assignment(
    assign: np.ndarray, n_parties: int, sizes: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """``assign[i]`` = party of sample i, or ``n_parties`` for "left out" -> party ->
    int64 indices sorted ascending (one sort of ``party | index`` keys).
    ``sizes``: the per-party counts when the caller already knows them."""
    order = sort_by_group(assign, _bits(n_parties + 1))
    if sizes is None:
        sizes = np.bincount(assign, minlength=n_parties + 1)
    return split_sorted(order, np.asarray(sizes)[:n_parties])


def random_split(n_samples: int, sizes: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Party j gets ``sizes[j]`` samples: a random permutation of 0..N-1 cut at the
    cumulative sizes (``sum(sizes) == N``), each part sorted ascending."""
    n_parties = len(sizes)
    dtype = small_uint(n_parties + 1)
    assign = np.empty(n_samples, dtype=dtype)
    assign[rng.permutation(n_samples)] = np.repeat(np.arange(n_parties, dtype=dtype), sizes)
    return dataidxs_from_assignment(assign, n_parties)


def _random_bits(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """``n`` uniform integers of ``bits`` bits (1..64), from as few raw 64-bit draws as
    the smallest of uint16/uint32/uint64 that holds them needs."""
    for dtype, width in ((np.uint16, 16), (np.uint32, 32), (np.uint64, 64)):
        if bits <= width:
            per = 64 // width
            raw = rng.bit_generator.random_raw((n + per - 1) // per).view(dtype)[:n]
            if bits < width:
                raw >>= dtype(width - bits)
            return raw
    raise ValueError(f"internal: {bits} random bits")


def _random_field_bits(ib: int, cb: int, largest_class: int, n_samples: int, n_classes: int) -> int:
    """Width of the random field of the ``class | random | id`` keys: fill 32 bits when
    that leaves few ties, else 62."""
    rb = _SHORT_BITS - ib - cb
    if rb < 1 or largest_class > _MAX_TIES << rb:
        rb = _LONG_BITS - ib - cb
    if rb < 1:
        raise ValueError(
            f"partitioners: {n_samples} samples of {n_classes} classes are too many to pack in {_LONG_BITS} bits"
        )
    return rb


def _break_ties_at_cuts(
    key: np.ndarray, ib: int, cuts: np.ndarray, seq: np.ndarray, rng: np.random.Generator
) -> None:
    """Make the sorted order of ``key`` (ties of the random field broken by index)
    exchangeable where it matters: for every run of equal ``key >> ib`` that a cut
    falls inside, shuffle ``seq`` over the run's positions. ``cuts``: the ascending
    positions 1..N-1 where ``seq`` may change value.

    Sorting by iid random keys and breaking ties uniformly at random gives a uniformly
    random order; ``seq`` (the party of each position) is constant on the runs no cut
    falls inside, so shuffling it within the cut runs is the same as breaking all
    ties at random. The work is proportional to the number of cuts, not to N.
    """
    sh = key.dtype.type(ib)
    hi = key[cuts] >> sh
    tied = hi == key[cuts - 1] >> sh
    if not tied.any():
        return
    val = hi[tied]  # ascending, as the cuts are; several cuts may share a run
    val = val[np.concatenate(([True], val[1:] != val[:-1]))] << sh
    start = key.searchsorted(val)
    length = key.searchsorted(val | key.dtype.type((1 << ib) - 1), side="right") - start
    run = np.repeat(np.arange(start.size), length)
    pos = np.arange(run.size) + np.repeat(start - (np.cumsum(length) - length), length)
    # a random order within each run (float64 keys run + U[0, 1): a tie has probability
    # below 2^-40 per pair)
    seq[pos] = seq[pos[(run + rng.random(run.size)).argsort()]]


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
    them at the cumulative counts", which is what this does: one sort of ``class |
    random | id`` keys puts the samples in a random order within their class, the
    class's runs of party ids are laid along it, and a sort of ``party | id`` keys
    groups the ids by party. ``classes, sizes``: :func:`class_sizes` of ``labels``
    when the caller has them.
    """
    if classes is None or sizes is None:
        classes, sizes = class_sizes(labels)
    n_parties = counts.shape[1]
    full = np.empty((len(sizes), n_parties + 1), dtype=np.int64)
    full[:, :n_parties] = counts
    full[:, n_parties] = sizes - counts.sum(axis=1)  # the left-out samples: party n
    if (full < 0).any():
        raise ValueError("internal: class counts exceed the class sizes")
    n = labels.size
    ib, cb, pb = _bits(n), _bits(len(sizes)), _bits(n_parties + 1)
    rb = _random_field_bits(ib, cb, int(sizes.max()), n, len(sizes))
    pdt, kdt = _key_dtype(pb + ib), _key_dtype(cb + rb + ib)
    if pdt is None:
        raise ValueError(f"partitioners: {n} samples and {n_parties} parties are too many to pack in 62 bits")
    out = np.empty(n, dtype=np.int64)
    key = _key_space(out, kdt, 1)  # the upper half: the low one is widened into last

    # 1. key = class | random | id, sorted
    np.left_shift(_class_codes(labels, classes), rb, out=key, dtype=kdt, casting="unsafe")
    np.bitwise_or(key, _random_bits(rng, n, rb), out=key, dtype=kdt)
    key <<= kdt(ib)
    np.bitwise_or(key, np.arange(n, dtype=kdt), out=key)
    _sort_keys(key)

    # 2. along it, class by class, the runs of counts[k, j] party ids j (shifted high)
    runs = full.ravel()
    party = np.repeat(np.tile(np.arange(n_parties + 1, dtype=pdt) << pdt(ib), len(sizes)), runs)
    starts = np.cumsum(runs) - runs
    _break_ties_at_cuts(key, ib, starts[(runs > 0) & (starts > 0)], party, rng)

    # 3. party | id, sorted: each party's sample ids, ascending
    key &= kdt((1 << ib) - 1)
    np.bitwise_or(party, key, out=party, dtype=pdt, casting="unsafe")
    del key
    _sorted_ids_into(party, ib, out)
    return split_sorted(out, full.sum(axis=0)[:n_parties])


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
