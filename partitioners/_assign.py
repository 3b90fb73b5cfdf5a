"""Vectorised building blocks shared by the schemes (private).

Every scheme decides *how many* samples (of each class) each party gets, then the index
arrays are materialised once, here, with a few O(N) numpy passes and one sort of packed
integer keys ``party << bits | sample id`` (32-bit when they fit: numpy's vectorised
sort of a uint32 array is ~2.5x faster than a stable argsort of the party ids), never a
Python loop over samples. The uniformly random order within each class that the
class-count schemes cut into parties is a counting sort into random buckets
(:class:`RandomClassOrder`), not a second comparison sort.

Memory: at N = 50,000 a call's time is ~1 ms, so N-sized temporaries cost about as much
as their arithmetic. A class-count call holds ~1.6 MB at its peak at N = 50,000 (~32
bytes a sample): in a fresh process, glibc's default trim threshold then hands those
pages back after every call and a loop of calls pays ~180 page faults each (1.6-1.7 ms
instead of 1.2 ms); once any larger array has been freed the threshold is higher and
the faults are gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

_U16 = 1 << 16
# packed keys up to 32 bits sort as uint32, up to 64 as uint64 (not through a float64
# view, ~20% faster but wrong where denormals are flushed to zero: most such keys are
# denormal doubles, and torch.set_flush_denormal(True) or -ffast-math code sets DAZ)
_SHORT_BITS = 32
_LONG_BITS = 64


def small_uint(n_values: int) -> type[np.unsignedinteger] | type[np.signedinteger]:
    """The dtype for ids 0..n_values-1: uint16 when it fits."""
    return np.uint16 if n_values <= _U16 else np.int64


# marks a bucket a party cut splits: never a party << ib, whose low ib >= 1 bits are 0
_ALL_ONES = {np.uint32: np.uint32(0xFFFF_FFFF), np.uint64: np.uint64(0xFFFF_FFFF_FFFF_FFFF)}


def _bits(n_values: int) -> int:
    """Bits that hold 0..n_values-1 (at least 1)."""
    return max(1, (int(n_values) - 1).bit_length())


def _key_dtype(bits: int) -> type[np.unsignedinteger] | None:
    if bits <= _SHORT_BITS:
        return np.uint32
    if bits <= _LONG_BITS:
        return np.uint64
    return None


def _sorted_ids_into(key: np.ndarray, ib: int, out: np.ndarray) -> np.ndarray:
    """Sort the packed ``key`` in place and write its low ``ib`` bits (the sample ids)
    into the int64 ``out``."""
    key.sort()
    np.bitwise_and(key, key.dtype.type((1 << ib) - 1), out=out, dtype=key.dtype, casting="unsafe")
    return out


def sort_by_group(group: np.ndarray, group_bits: int) -> np.ndarray:
    """The sample ids 0..n-1 stably sorted by ``group`` (values < ``2**group_bits``), as
    int64: one sort of the packed keys ``group << bits(n) | id``."""
    n = group.size
    ib = _bits(n)
    dtype = _key_dtype(group_bits + ib)
    if dtype is None:  # astronomically many (group, id) pairs
        return np.argsort(group, kind="stable").astype(np.int64, copy=False)
    key = np.left_shift(group, ib, dtype=dtype, casting="unsafe")
    np.bitwise_or(key, np.arange(n, dtype=dtype), out=key)
    return _sorted_ids_into(key, ib, np.empty(n, dtype=np.int64))


def _labels_are_codes(top: int, n_samples: int) -> bool:
    """Whether labels up to ``top`` can index per-label arrays directly (absent labels
    then cost an empty slot each), rather than through ``np.unique``."""
    return top < 2 * n_samples + _U16


def class_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, sizes)``: the distinct labels (ascending) and their sample counts."""
    if _labels_are_codes(int(labels.max()), labels.size):
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
    hi = np.cumsum(sizes).tolist()
    return {j: order[lo:h] for j, (lo, h) in enumerate(zip([0, *hi], hi))}


def dataidxs_from_assignment(assign: np.ndarray, n_parties: int) -> dict[int, np.ndarray]:
    """``assign[i]`` = party of sample i, or ``n_parties`` for "left out" -> party ->
    int64 indices sorted ascending (one sort of ``party | index`` keys)."""
    order = sort_by_group(assign, _bits(n_parties + 1))
    return split_sorted(order, np.bincount(assign, minlength=n_parties + 1)[:n_parties])


def random_split(n_samples: int, sizes: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Party j gets ``sizes[j]`` samples drawn uniformly at random without replacement
    (``sum(sizes) == N``), each part sorted ascending: all samples as one class of a
    :class:`RandomClassOrder`, dealt in runs of ``sizes`` (cheaper than cutting
    ``rng.permutation(N)``, whose shuffle alone takes ~0.55 ms at N = 50,000)."""
    one_class = np.zeros(n_samples, dtype=np.int64)
    return RandomClassOrder.draw(one_class, rng).deal(np.asarray(sizes, dtype=np.int64)[None, :], rng)


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


# samples per bucket a class's random buckets are sized for (see RandomClassOrder): fewer
# means more buckets to count, more means more samples in the buckets a cut splits
_BUCKET_FILL = 2


def _bucket_bits(class_size: int) -> int:
    """Random bits for a class of ``class_size`` samples: 2**bits buckets ~_BUCKET_FILL
    deep (at most ``class_size`` buckets)."""
    return (int(class_size) // _BUCKET_FILL).bit_length()


def _count_buckets(bucket: np.ndarray, n_buckets: int) -> np.ndarray:
    """``bounds`` (n_buckets + 1): bucket b spans positions bounds[b]:bounds[b + 1]."""
    bounds = np.empty(n_buckets + 1, dtype=np.int64)
    bounds[0] = 0
    np.cumsum(np.bincount(bucket, minlength=n_buckets), out=bounds[1:])
    return bounds


def _same_width_buckets(codes: np.ndarray, n_codes: int, rb: int, rng: np.random.Generator):
    """Every class code gets 2**rb buckets: ``bucket = code << rb | rb random bits``."""
    bucket = np.left_shift(codes, rb)
    if rb:
        bucket |= _random_bits(rng, codes.size, rb)
    bounds = _count_buckets(bucket, n_codes << rb)
    return bucket, bounds, bounds[:: 1 << rb]


def _per_class_buckets(codes: np.ndarray, sizes_by_code: np.ndarray, rng: np.random.Generator):
    """Class k gets 2**bits_k buckets sized for its own ``n_k`` (``_bucket_bits``), so the
    buckets number at most N + (number of codes) however uneven the classes are; one
    width for all would give every small (or absent) class the largest class's count."""
    # bit_length of each size // FILL (exact: sizes < 2**53)
    bits = np.frexp((sizes_by_code // _BUCKET_FILL).astype(np.float64))[1].astype(np.int64)
    first = np.zeros(len(bits) + 1, dtype=np.int64)
    np.cumsum(np.left_shift(np.int64(1), bits), out=first[1:])
    if len(bits) << int(bits.max()) <= 2 * int(first[-1]):  # one width costs little more
        return _same_width_buckets(codes, len(bits), int(bits.max()), rng)
    width = 16 if bits.max() <= 16 else 32 if bits.max() <= 32 else 64
    raw = _random_bits(rng, codes.size, width)
    # a sample of class k: its class's first bucket + the top bits_k of its random bits
    np.right_shift(raw, (width - bits).astype(raw.dtype)[codes], out=raw)
    bucket = first[codes]
    bucket += raw.astype(np.int64, copy=False)
    bounds = _count_buckets(bucket, int(first[-1]))
    return bucket, bounds, bounds[first]


@dataclass(frozen=True)
class RandomClassOrder:
    """The samples in a uniformly random order within their class (classes ascending),
    by a counting sort into random buckets instead of a comparison sort.

    Each sample of class k draws a random bucket among its class's buckets (class k's
    buckets come after class k-1's). Ordering the samples by bucket, and uniformly at
    random within a bucket, orders each class uniformly at random (iid keys, ties broken
    at random; any iid bucket law would do, uniform keeps buckets shallow).
    ``bincount`` of the buckets gives every bucket's span of positions in that order,
    and the class sizes on the way. :meth:`deal` lays runs of party ids along the
    order; a bucket inside one run needs no order within it at all, so only the samples
    of the buckets that a party cut falls inside (at most one per cut, ~_BUCKET_FILL
    deep) are put in random order.
    """

    classes: np.ndarray  # the distinct labels, ascending
    sizes: np.ndarray  # samples of each class
    bucket: np.ndarray  # int64, per sample: its bucket
    bounds: np.ndarray  # int64, per bucket and one more: bucket b spans bounds[b]:bounds[b + 1]

    @classmethod
    def draw(cls, labels: np.ndarray, rng: np.random.Generator) -> RandomClassOrder:
        """A random order of the samples of ``labels`` (class ids >= 0), drawn from ``rng``."""
        labels = np.asarray(labels, dtype=np.int64)  # room for the shifts below
        n = labels.size
        top = int(labels.max())
        if _labels_are_codes(top, n):  # the labels are their own class codes
            # one pass as if the classes were balanced: its counts give the class sizes,
            # and it stands unless the largest class's buckets came out too deep
            rb = _bucket_bits(-(-n // (top + 1)))
            bucket, bounds, class_bounds = _same_width_buckets(labels, top + 1, rb, rng)
            sizes_by_code = class_bounds[1:] - class_bounds[:-1]
            if _bucket_bits(sizes_by_code.max()) > rb + 2:
                bucket, bounds, _ = _per_class_buckets(labels, sizes_by_code, rng)
            present = np.flatnonzero(sizes_by_code)
            return cls(present, sizes_by_code[present], bucket, bounds)
        uniques, codes, sizes = np.unique(labels, return_inverse=True, return_counts=True)
        bucket, bounds, _ = _per_class_buckets(codes.reshape(-1), sizes, rng)
        return cls(uniques, sizes, bucket, bounds)

    def deal(self, counts: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Give party j ``counts[k, j]`` samples of class k: the class's positions in the
        random order are cut into runs of ``counts[k, 0], counts[k, 1], ...`` samples,
        the rest (beyond ``counts[k].sum()``) left out. ``counts``: ``K x n_parties`` over
        :attr:`classes`. Returns party -> int64 sample ids, ascending (one sort of
        packed ``party | id`` keys).
        """
        sizes = self.sizes
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[0] != len(sizes) or counts.dtype.kind not in "iu":
            raise ValueError(
                f"internal: counts must be integers, one row per class ({len(sizes)}); got {counts.dtype} {counts.shape}"
            )
        n_parties = counts.shape[1]
        full = np.empty((len(sizes), n_parties + 1), dtype=np.int64)
        full[:, :n_parties] = counts
        np.subtract(sizes, counts.sum(axis=1), out=full[:, n_parties])  # the left-out samples: party n
        if full.min() < 0:
            raise ValueError("internal: class counts exceed the class sizes")
        n = self.bucket.size
        ib = _bits(n)
        pdt = _key_dtype(_bits(n_parties + 1) + ib)
        if pdt is None:
            raise ValueError(f"partitioners: {n} samples and {n_parties} parties are too many to pack in {_LONG_BITS} bits")
        start, end = self.bounds[:-1], self.bounds[1:]

        # the non-empty runs of party ids, class by class (party n: the left-out samples)
        runs = full.ravel()
        nonempty = np.flatnonzero(runs)
        run_end = np.cumsum(runs[nonempty])
        # the bucket holding position run_end (the next run's first): its last position
        # is in that run too, or it straddles the cut
        after = np.searchsorted(end, run_end, side="right")
        # each bucket's party << ib: that of the run holding its last position (empty
        # buckets: any, never read), or all ones (never a party << ib) where a cut falls
        # strictly inside it
        run_party = (nonempty % (n_parties + 1)).astype(pdt) << pdt(ib)
        per_run = after.copy()
        per_run[1:] -= after[:-1]  # buckets ending in each run (np.diff's prepend costs more)
        table = np.repeat(run_party, per_run)
        split_mark = _ALL_ONES[pdt]
        at_cut = after[:-1]  # the bucket at each cut (not the last run's end, N)
        table[at_cut[start[at_cut] < run_end[:-1]]] = split_mark

        key = np.empty(n, dtype=pdt)
        np.take(table, self.bucket, out=key, mode="clip")
        ids = np.flatnonzero(key == split_mark)
        np.bitwise_or(key, np.arange(n, dtype=pdt), out=key)
        if ids.size:
            # the split buckets' samples in random order within each bucket (a random
            # permutation, then a stable sort by bucket), laid on the bucket's positions
            ids = rng.permutation(ids)
            b = self.bucket[ids]
            order = np.argsort(b, kind="stable")
            ids, b = ids[order], b[order]
            pos = start[b] + (np.arange(ids.size) - np.searchsorted(b, b))
            key[ids] = run_party[np.searchsorted(run_end, pos, side="right")] | ids.astype(pdt)
        out = np.empty(n, dtype=np.int64)
        _sorted_ids_into(key, ib, out)
        return split_sorted(out, full.sum(axis=0)[:n_parties])


def dataidxs_from_class_counts(
    labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """Give party j ``counts[k, j]`` samples of class k (distinct labels ascending), drawn
    uniformly at random without replacement from that class: NIID-Bench's "shuffle the
    class indices and cut them at the cumulative counts". Schemes that need the class
    sizes before choosing ``counts`` call :class:`RandomClassOrder` themselves."""
    return RandomClassOrder.draw(labels, rng).deal(counts, rng)


def redraw_batches(max_redraws: int, draw_cost: int) -> Iterator[int]:
    """Sizes of successive batches of candidate draws, summing to ``max_redraws``.

    Schemes that redraw until a condition holds (every party >= min_size) test a batch
    of candidate draws at once, vectorised; a draw costs ``draw_cost`` random numbers.
    The first batch is one draw when draws are expensive, a few when they are cheap;
    then the batch doubles, capped so a batch holds at most ~1M numbers.
    """
    batch = min(max(4096 // max(draw_cost, 1), 1), 64)  # (np.clip on ints costs 7 us)
    cap = max(1, (1 << 20) // max(draw_cost, 1))
    left = max_redraws
    while left > 0:
        b = min(batch, left)
        yield b
        left -= b
        batch = max(1, min(2 * batch, cap))
