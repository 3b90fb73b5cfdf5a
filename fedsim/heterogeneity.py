"""Model heterogeneity of one round's cohort, from flattened weights.

Notation: ``w`` is the global model sent at the start of the round, ``w_k`` the
model client k returns, ``d_k = w_k - w`` its update and ``w+`` the aggregate.
All measures use the floating-point entries of the state_dict flattened into one
vector (integer buffers such as ``num_batches_tracked`` are left out).

* weight divergence of client k: ``||w_k - w+|| / ||w+||`` (Zhao et al. 2018,
  "Federated Learning with Non-IID Data"); reported as mean and max over clients;
* mean pairwise cosine similarity of the updates: the mean over pairs k < l of
  ``<d_k, d_l> / (||d_k|| ||d_l||)``; two identical updates give 1;
* gradient diversity: ``sum_k ||d_k||^2 / ||sum_k d_k||^2`` (Yin et al. 2018,
  "Gradient Diversity"); K identical updates give 1/K, orthogonal ones 1;
* update norms ``||d_k||``: mean and max.

Everything comes from the Gram matrix ``G = D D^T`` of the stacked updates ``D``
(K x P) and ``D u`` with ``u = w+ - w``: one pass over the weights, cost
O(K^2 P) multiply-adds (a K x P by P x K product), so it stays cheap enough to be
on by default.
"""

from __future__ import annotations

import math

import torch


def model_heterogeneity(global_flat: torch.Tensor, client_flats: torch.Tensor, agg_flat: torch.Tensor) -> dict[str, float | None]:
    """Measures above for ``client_flats`` (K x P) around ``global_flat`` and ``agg_flat`` (P)."""
    K = client_flats.shape[0]
    if K == 0:
        return {}
    acc = torch.float64
    D = (client_flats - global_flat.unsqueeze(0)).to(acc)
    u = (agg_flat - global_flat).to(acc)
    G = D @ D.T
    norms_sq = torch.diagonal(G).clamp_min(0)
    norms = norms_sq.sqrt()
    Du = D @ u
    u_sq = u @ u
    agg_norm = float(agg_flat.to(acc).norm())
    # ||w_k - w+||^2 = ||d_k - u||^2
    div = (norms_sq - 2 * Du + u_sq).clamp_min(0).sqrt() / (agg_norm if agg_norm > 0 else float("nan"))
    total_sq = float(G.sum())
    grad_div = float(norms_sq.sum()) / total_sq if total_sq > 0 else None
    if K >= 2:
        denom = torch.outer(norms, norms)
        cos = torch.where(denom > 0, G / denom.clamp_min(1e-300), torch.zeros_like(G))
        iu = torch.triu_indices(K, K, offset=1)
        mean_cos: float | None = float(cos[iu[0], iu[1]].mean())
    else:
        mean_cos = None
    out: dict[str, float | None] = {
        "weight_divergence_mean": float(div.mean()),
        "weight_divergence_max": float(div.max()),
        "update_cosine_mean": mean_cos,
        "gradient_diversity": grad_div,
        "update_norm_mean": float(norms.mean()),
        "update_norm_max": float(norms.max()),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
