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

import torch

#: cohorts up to this size get the Gram matrix in one pass (K^2 P by GEMM); larger
#: ones two O(K P) passes (a K = 100 Gram over 11M weights would cost 110 GFLOP)
GRAM_MAX_CLIENTS = 32


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
    f64 = torch.float64
    d_dot_u = torch.zeros(K, dtype=f64)
    gram = torch.zeros((K, K), dtype=f64) if K <= GRAM_MAX_CLIENTS else None
    norm_sq = torch.zeros(K, dtype=f64)
    u_sq = agg_sq = sum_sq = 0.0

    def block(key: str) -> torch.Tensor:
        """D: the K x P_key updates of one entry, float32 (one copy per client)."""
        g = global_state[key].reshape(-1).float()
        D = torch.empty((K, g.numel()), dtype=torch.float32)
        for i, st in enumerate(client_states):
            D[i] = st[key].reshape(-1)
        D -= g
        return D

    # key by key: memory stays one key's K x P_key block, which also stays in cache
    for key in keys:
        D = block(key)
        a = agg_state[key].reshape(-1).float()
        u = a - global_state[key].reshape(-1).float()
        d_dot_u += (D @ u).double()
        u_sq += float(u.dot(u))
        agg_sq += float(a.dot(a))
        if gram is not None:  # small cohorts: one pass, the Gram matrix by GEMM
            gram += (D @ D.T).double()
        else:
            norm_sq += torch.linalg.vector_norm(D, dim=1).double() ** 2
            s = D.sum(dim=0)
            sum_sq += float(s.dot(s))
    if gram is not None:
        norm_sq = torch.diagonal(gram).clone()
        sum_sq = float(gram.sum())
    norms = norm_sq.clamp_min(0).sqrt()
    nonzero = norms > 0
    inv = torch.where(nonzero, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    unit_sum_sq = 0.0
    if K >= 2 and gram is not None:
        unit_sum_sq = float(inv @ gram @ inv)  # ||sum_k d_k / ||d_k||| |^2
    elif K >= 2:  # large cohorts: a second pass, O(K P) instead of O(K^2 P)
        inv32 = inv.float()
        for key in keys:
            e = (inv32 @ block(key)).double()
            unit_sum_sq += float(e.dot(e))
    agg_norm = math.sqrt(agg_sq)
    div = (norm_sq - 2 * d_dot_u + u_sq).clamp_min(0).sqrt() / (agg_norm if agg_norm > 0 else float("nan"))
    out: dict[str, float | None] = {
        "client_drift_mean": float(div.mean()),
        "client_drift_max": float(div.max()),
        "update_cosine_mean": (unit_sum_sq - int(nonzero.sum())) / (K * (K - 1)) if K >= 2 else None,
        "gradient_diversity": float(norm_sq.sum()) / sum_sq if sum_sq > 0 else None,
        "update_norm_mean": float(norms.mean()),
        "update_norm_max": float(norms.max()),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def model_heterogeneity(
    global_flat: torch.Tensor, client_flats: torch.Tensor, agg_flat: torch.Tensor
) -> dict[str, float | None]:
    """The measures for flattened weights: ``client_flats`` is K x P."""
    return heterogeneity_of_states({"w": global_flat}, [{"w": c} for c in client_flats], {"w": agg_flat}, ["w"])
