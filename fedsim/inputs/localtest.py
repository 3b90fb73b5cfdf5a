"""Every party's own test data (``eval.local_test``), part of the partition.

Personalised FL is judged on each party's own distribution (PFLlib, FL-bench): its
local models and the global one are tested on data that follows the party's labels.

* ``split``: each party's data is split per class into local train and local test
  (``eval.local_test_fraction`` of each class, rounded, from the seed): the PFLlib and
  FL-bench protocol. The test part leaves the party's training indices.
* ``match``: each party gets a test set drawn from the central test set with its
  training label proportions (``eval.local_test_size`` samples, or its share of the
  training data times the test set's size), without replacement within the party; the
  central test set stays whole and parties may share test samples.
* ``natural``: each party's groups' own test samples (LEAF's users: the test split of
  the users a party holds).

The result is stored in ``dataidxs.npz`` beside the training indices, checked never to
overlap them (``split``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

import partitioners
from fedsim.errors import ConfigError
from fedsim.schema.experiment import ExperimentConfig
from fedsim.util.seeding import derive

log = logging.getLogger(__name__)


@dataclass
class LocalTest:
    """Parties' own test indices and the set they index (``train`` or ``test``)."""

    indices: dict[int, np.ndarray]
    source: str


def split_local_test(dataidxs: dict[int, np.ndarray], labels: np.ndarray, fraction: float, seed: int):
    """(training indices, local test) with ``round(fraction * n_c)`` samples of each of
    a party's classes held out at random (a class with one sample stays in training)."""
    train: dict[int, np.ndarray] = {}
    test: dict[int, np.ndarray] = {}
    for party, idx in dataidxs.items():
        idx = np.asarray(idx, dtype=np.int64)
        rng = np.random.default_rng(derive(seed, "local-test", party))
        held = []
        for c in np.unique(labels[idx]):
            members = idx[labels[idx] == c]
            k = int(round(fraction * members.size)) if members.size > 1 else 0
            k = min(k, members.size - 1) if members.size > 1 else 0
            held.append(rng.choice(members, size=k, replace=False))
        out = np.sort(np.concatenate(held)) if held else idx[:0]
        test[party] = out
        train[party] = np.setdiff1d(idx, out, assume_unique=True)
    return train, test


def match_local_test(
    dataidxs: dict[int, np.ndarray], labels: np.ndarray, test_labels: np.ndarray, size: int | None, seed: int
) -> dict[int, np.ndarray]:
    """Each party's test set drawn from the central test set with its training label
    proportions: per class the largest-remainder share of ``size``. When the test set
    holds too few samples of a class, the party's set shrinks until it has enough, so
    the proportions stay the party's."""
    n_train = sum(int(np.asarray(i).size) for i in dataidxs.values())
    by_class = {int(c): np.flatnonzero(test_labels == c) for c in np.unique(test_labels)}
    out: dict[int, np.ndarray] = {}
    for party, idx in dataidxs.items():
        idx = np.asarray(idx, dtype=np.int64)
        rng = np.random.default_rng(derive(seed, "local-test-match", party))
        n = size if size is not None else int(round(test_labels.size * idx.size / max(1, n_train)))
        classes, counts = np.unique(labels[idx], return_counts=True)
        if n == 0 or idx.size == 0:
            out[party] = idx[:0]
            continue
        share = counts / counts.sum()
        avail = np.array([by_class.get(int(c), np.empty(0)).size for c in classes])
        # a class the test set is short of shrinks the whole set: the proportions hold
        n = int(min(n, np.floor(np.min(avail / share))))
        ideal = n * share
        want = np.floor(ideal).astype(np.int64)
        for i in np.argsort(-(ideal - want), kind="stable")[: n - int(want.sum())]:
            want[i] += 1
        picks = [
            rng.choice(by_class[int(c)], size=min(int(k), by_class.get(int(c), np.empty(0)).size), replace=False)
            for c, k in zip(classes, want)
            if int(c) in by_class and k > 0
        ]
        out[party] = np.sort(np.concatenate(picks)) if picks else idx[:0]
    return out


def make_local_test(
    cfg: ExperimentConfig, dataidxs: dict[int, np.ndarray], bundle
) -> tuple[dict[int, np.ndarray], LocalTest | None]:
    """(the training dataidxs, the local test) of ``cfg.eval.local_test``."""
    mode = cfg.eval.local_test
    if mode == "none":
        return dataidxs, None
    labels = bundle.y_train.numpy()
    if mode == "split":
        train, test = split_local_test(dataidxs, labels, cfg.eval.local_test_fraction, cfg.seed)
        check_coverage(mode, test)
        return train, LocalTest(test, "train")
    if mode == "match":
        test = match_local_test(dataidxs, labels, bundle.y_test.numpy(), cfg.eval.local_test_size, cfg.seed)
        check_coverage(mode, test)
        return dataidxs, LocalTest(test, "test")
    groups_test = getattr(bundle, "groups_test", None)
    if bundle.groups is None or groups_test is None:
        raise ConfigError(
            f"eval.local_test 'natural' needs a data set whose test samples carry their groups (LEAF's "
            f"users, data.hf_group_key); '{bundle.name}' has none: use split or match"
        )
    test = partitioners.group_test_indices(bundle.groups, groups_test, dataidxs)
    check_coverage(mode, test)
    return dataidxs, LocalTest(test, "test")


#: why a party can end up with no test sample of its own, per mode
_NO_TEST = {
    "split": "a class with one sample stays in training",
    "match": "its share of the test set rounds to nothing, or the test set lacks its classes",
    "natural": "its groups have no test samples",
}


def check_coverage(mode: str, test: dict[int, np.ndarray]) -> None:
    """Parties without a test sample of their own are left out of the local metrics and
    ``parties.jsonl``: said once (a warning); when no party has one, nothing could be
    measured, and the config is refused."""
    empty = sorted(p for p, idx in test.items() if np.asarray(idx).size == 0)
    if not empty:
        return
    if len(empty) == len(test):
        raise ConfigError(
            f"eval.local_test={mode} gives none of the {len(test)} parties a test sample ({_NO_TEST[mode]}): "
            "there would be no local metrics; use larger parties (fewer of them), another eval.local_test, or none"
        )
    shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
    log.warning(
        "eval.local_test=%s: %d of %d parties have no test sample (%s): parties %s are left out of the "
        "local metrics and parties.jsonl",
        mode,
        len(empty),
        len(test),
        _NO_TEST[mode],
        shown,
    )
