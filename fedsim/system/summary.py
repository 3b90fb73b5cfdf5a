"""What ``summary.json`` says about time: the simulated time, the time to reach target
accuracies (``eval.target_accuracy``), and which parties and classes the aggregate saw.

Time to accuracy is the simulated end of the first round whose test accuracy reaches
the target (FedScale's and the field's time-to-accuracy; the round too, which is all a
run without a clock has, and the client updates aggregated until then). Deadlines and over-selection favour fast parties, a bias
in participation (Lai et al. 2022; Bonawitz et al. 2019): ``slow_quartile_share`` is the
share of aggregated replies that came from the slowest quarter of the parties (by
their compute speed; 0.25 when speed does not matter), ``class_share_seen`` each
class's share of the samples behind the aggregated replies (``class_share_train``: of
the training set) and ``class_tv_seen`` the total variation distance between the two.
Which parties: ``speed_quartile_share`` the shares of the aggregated replies from each
quarter of the parties by compute speed (fastest first; its last entry is
``slow_quartile_share``), and ``aggregated_per_party`` how often each party's reply was
aggregated (up to :data:`PER_PARTY_MAX` parties; beyond, ``clients.jsonl`` has them).
What the bias costs the slow parties (with ``eval.local_test``): ``speed_quartile_accuracy``
the mean accuracy of the global model on each quarter's own test data in the last
per-party evaluation (fastest first), ``slow_quartile_accuracy`` its last entry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsim.system.profiles import DeviceProfiles

#: parties up to which ``summary.json`` lists each one's aggregated replies (a list of a
#: million counts would be most of the file)
PER_PARTY_MAX = 10_000


def time_to_accuracy(history: list[dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    """``{target: {"round", "sim_time_s", "client_updates"}}`` of the first round reaching
    each target (None: never); ``client_updates``: the replies aggregated until then (the
    FedBuff paper's client updates to accuracy)."""
    out: dict[str, Any] = {}
    updates = np.cumsum([int(r.get("clients") or 0) for r in history]).tolist()
    for target in targets:
        at = next((i for i, r in enumerate(history) if (r.get("test_accuracy") or 0.0) >= target), None)
        if at is None:
            out[f"{target:g}"] = None
            continue
        row = history[at]
        out[f"{target:g}"] = {"round": row["round"], "sim_time_s": row.get("sim_end_s"), "client_updates": updates[at]}
    return out


def participation(
    clients: list[dict[str, Any]], profiles: DeviceProfiles, class_counts: list[list[int]] | None
) -> dict[str, Any]:
    """How often the aggregate saw whom (module docstring), from ``clients.jsonl``'s rows."""
    train = [r for r in clients if r.get("stage") == "train" and "sim_total_s" in r]
    ok = [r["party"] for r in train if r.get("status") == "ok"]
    counts = {s: sum(1 for r in train if r.get("status") == s) for s in ("ok", "late", "offline", "surplus")}
    n = profiles.n
    slow = set(np.argsort(-profiles.ms_per_sample, kind="stable")[: max(1, n // 4)].tolist())
    seen = np.bincount(np.asarray(ok, dtype=np.int64), minlength=n) if ok else np.zeros(n, dtype=np.int64)
    out: dict[str, Any] = {
        "replies": counts,
        "slow_quartile_share": float(sum(1 for p in ok if p in slow) / len(ok)) if ok else None,
        "speed_quartile_share": _quartile_shares(seen, profiles.ms_per_sample) if ok else None,
        "parties_never_aggregated": int((seen == 0).sum()),
    }
    if n <= PER_PARTY_MAX:
        out["aggregated_per_party"] = seen.tolist()
    if class_counts is not None and ok:
        cc = np.asarray(class_counts, dtype=np.float64)
        agg = (seen[:, None] * cc).sum(axis=0)
        overall = cc.sum(axis=0)
        # each class's share of the samples the aggregated replies trained on, and of the training set
        out["class_share_seen"] = (agg / agg.sum()).round(6).tolist()
        out["class_share_train"] = (overall / overall.sum()).round(6).tolist()
        out["class_tv_seen"] = float(0.5 * np.abs(agg / agg.sum() - overall / overall.sum()).sum())
    return out


def _quartile_shares(seen: np.ndarray, ms_per_sample: np.ndarray) -> list[float]:
    """The shares of the aggregated replies from each quarter of the parties by compute
    speed, fastest first; the slowest quarter is the ``max(1, n // 4)`` slowest parties
    (as ``slow_quartile_share``), the rest split into three near-equal quarters."""
    order = np.argsort(ms_per_sample, kind="stable")  # fastest first
    n = len(order)
    slow = max(1, n // 4)
    rest = np.array_split(order[: n - slow], 3)
    total = seen.sum()
    return [float(seen[q].sum() / total) for q in (*rest, order[n - slow :])]


def quartile_accuracy(party_rows: list[dict[str, Any]], profiles: DeviceProfiles) -> dict[str, Any]:
    """The mean accuracy of the global model on each speed quarter's own test data, in the
    last per-party evaluation (``parties.jsonl``, mode ``local``), fastest first; the
    quarters are :func:`_quartile_shares`'."""
    rows = [r for r in party_rows if r.get("mode") == "local" and not r.get("holdout")]
    if not rows:
        return {}
    last = max(r["round"] for r in rows)
    acc = {int(r["party"]): float(r["accuracy"]) for r in rows if r["round"] == last}
    order = np.argsort(profiles.ms_per_sample, kind="stable")  # fastest first
    n = len(order)
    slow = max(1, n // 4)
    means = []
    for q in (*np.array_split(order[: n - slow], 3), order[n - slow :]):
        got = [acc[int(p)] for p in q if int(p) in acc]
        means.append(float(np.mean(got)) if got else None)
    return {"speed_quartile_accuracy": means, "slow_quartile_accuracy": means[-1]}


def summary_fields(
    history: list[dict[str, Any]],
    targets: list[float] | None,
    profiles: DeviceProfiles | None,
    clients: list[dict[str, Any]],
    class_counts: list[list[int]] | None,
    party_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The summary's time fields: none without a clock and without targets."""
    out: dict[str, Any] = {}
    if profiles is not None:
        out["sim_time_s"] = history[-1].get("sim_end_s") if history else 0.0
    if targets:
        out["time_to_accuracy"] = time_to_accuracy(history, targets)
    if profiles is not None:
        out["participation"] = participation(clients, profiles, class_counts)
        out["participation"].update(quartile_accuracy(party_rows or [], profiles))
    return out
