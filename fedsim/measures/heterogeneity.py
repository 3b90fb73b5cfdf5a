"""Model heterogeneity of one round's cohort.

Notation: ``w`` is the global model sent at the start of the round, ``w_k`` the model
client k returns (K clients), ``d_k = w_k - w`` its update and ``w+`` the aggregate,
``u = w+ - w``. All measures use the floating-point entries of the state_dict as one
vector (integer buffers such as ``num_batches_tracked`` are left out).

* client drift of client k: ``||w_k - w+|| / ||w+||``, how far its model ends from
  the aggregate, relative to the aggregate's norm; reported as mean and max over
  clients. (Zhao et al. 2018's "weight divergence" is another measure: the distance
  of the federated model to a centrally trained one, which a run does not have.)
* mean pairwise cosine similarity of the updates: the mean over pairs k < l of
  ``<d_k, d_l> / (||d_k|| ||d_l||)`` (a pair with a zero update counts 0); two
  identical updates give 1; undefined (None) for one client;
* gradient diversity: ``sum_k ||d_k||^2 / ||sum_k d_k||^2`` (Yin et al. 2018,
  "Gradient Diversity"); K identical updates give 1/K, orthogonal ones 1;
* update norms ``||d_k||``: mean and max.

Cost: O(K P) for P weights, not the O(K^2 P) of a Gram matrix. The pairwise mean
comes from one sum: with unit vectors ``e_k = d_k / ||d_k||``,
``sum_{k != l} cos_kl = ||sum_k e_k||^2 - K'`` (K' clients with a non-zero update),
and ``||w_k - w+||^2 = ||d_k||^2 - 2 <d_k, u> + ||u||^2``. The weights are read key by
key in float32 (sums in float64), so memory stays one key's K x P_key block: two
passes over the cohort's weights, cheap enough to be on by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

#: cohorts up to this size get the Gram matrix in one pass (K^2 P by GEMM); larger
#: ones two O(K P) passes (a K = 100 Gram over 11M weights would cost 110 GFLOP)
GRAM_MAX_CLIENTS = 32
#: the second pass reuses the first pass's update blocks while they take at most this
#: many bytes (100 simple-cnns: 18 MB; their copy was 40% of the measures' 20 ms)
KEEP_UPDATES_BYTES = 64 * 2**20


def heterogeneity_of_states(
    global_state: Mapping[str, torch.Tensor],
    client_states: Sequence[Mapping[str, torch.Tensor]],
    agg_state: Mapping[str, torch.Tensor],
    keys: Sequence[str],
) -> dict[str, float | None]:
    """The measures above over the entries ``keys`` of the state_dicts."""
    K = len(client_states)
    if K == 0 or not keys:
        return {}
    kept: dict[str, torch.Tensor] | None = None
    if K > GRAM_MAX_CLIENTS and 4 * K * sum(global_state[k].numel() for k in keys) <= KEEP_UPDATES_BYTES:
        kept = {}
    s = _first_pass(global_state, client_states, agg_state, keys, kept)
    norms = s.norm_sq.clamp_min(0).sqrt()
    nonzero = norms > 0
    inv = torch.where(nonzero, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    unit_sum_sq = 0.0
    if K >= 2 and s.gram is not None:
        unit_sum_sq = float(inv @ s.gram @ inv)  # ||sum_k d_k / ||d_k||| |^2
    elif K >= 2:  # large cohorts: a second pass, O(K P) instead of O(K^2 P)
        inv32 = inv.float()
        for key in keys:
            D = kept.pop(key) if kept is not None else _updates(global_state, client_states, key)
            e = (inv32 @ D).double()
            unit_sum_sq += float(e.dot(e))
    agg_norm = math.sqrt(s.agg_sq)
    div = (s.norm_sq - 2 * s.d_dot_u + s.u_sq).clamp_min(0).sqrt() / (agg_norm if agg_norm > 0 else float("nan"))
    out: dict[str, float | None] = {
        "client_drift_mean": float(div.mean()),
        "client_drift_max": float(div.max()),
        "update_cosine_mean": (unit_sum_sq - int(nonzero.sum())) / (K * (K - 1)) if K >= 2 else None,
        "gradient_diversity": float(s.norm_sq.sum()) / s.sum_sq if s.sum_sq > 0 else None,
        "update_norm_mean": float(norms.mean()),
        "update_norm_max": float(norms.max()),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


@dataclass
class _Sums:
    """What the first pass over the cohort's weights adds up (float64)."""

    #: <d_k, u> per client
    d_dot_u: torch.Tensor
    #: ||d_k||^2 per client
    norm_sq: torch.Tensor
    #: the K x K Gram matrix of the updates (small cohorts), else None
    gram: torch.Tensor | None
    #: ||u||^2, ||w+||^2 and ||sum_k d_k||^2
    u_sq: float = 0.0
    agg_sq: float = 0.0
    sum_sq: float = 0.0


def _updates(
    global_state: Mapping[str, torch.Tensor], client_states: Sequence[Mapping[str, torch.Tensor]], key: str
) -> torch.Tensor:
    """D: the K x P_key updates of one entry, float32 (one copy per client, in one
    ``torch.stack``: row by row, 100 clients of simple-cnn took 20 ms a round, issue 34)."""
    g = global_state[key].reshape(-1).float()
    D = torch.stack([st[key].reshape(-1).float() for st in client_states])
    D -= g
    return D


def _first_pass(
    global_state: Mapping[str, torch.Tensor],
    client_states: Sequence[Mapping[str, torch.Tensor]],
    agg_state: Mapping[str, torch.Tensor],
    keys: Sequence[str],
    kept: dict[str, torch.Tensor] | None = None,
) -> _Sums:
    """The sums of one pass over the weights, key by key: memory stays one key's K x P_key
    block, which also stays in cache (unless ``kept`` collects the blocks). Small cohorts
    get the Gram matrix by GEMM (and from it the norms and ||sum_k d_k||^2); large ones
    the norms and that sum directly."""
    K = len(client_states)
    f64 = torch.float64
    s = _Sums(torch.zeros(K, dtype=f64), torch.zeros(K, dtype=f64), None)
    gram = torch.zeros((K, K), dtype=f64) if K <= GRAM_MAX_CLIENTS else None
    for key in keys:
        D = _updates(global_state, client_states, key)
        if kept is not None:
            kept[key] = D
        a = agg_state[key].reshape(-1).float()
        u = a - global_state[key].reshape(-1).float()
        s.d_dot_u += (D @ u).double()
        s.u_sq += float(u.dot(u))
        s.agg_sq += float(a.dot(a))
        if gram is not None:
            gram += (D @ D.T).double()
        else:
            s.norm_sq += torch.linalg.vector_norm(D, dim=1).double() ** 2
            t = D.sum(dim=0)
            s.sum_sq += float(t.dot(t))
    if gram is not None:
        s.gram = gram
        s.norm_sq = torch.diagonal(gram).clone()
        s.sum_sq = float(gram.sum())
    return s


def model_heterogeneity(
    global_flat: torch.Tensor, client_flats: torch.Tensor, agg_flat: torch.Tensor
) -> dict[str, float | None]:
    """The measures for flattened weights: ``client_flats`` is K x P."""
    return heterogeneity_of_states({"w": global_flat}, [{"w": c} for c in client_flats], {"w": agg_flat}, ["w"])
