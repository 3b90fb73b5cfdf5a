"""FedBN (Li et al. 2021, "FedBN: Federated Learning on Non-IID Features via Local
Batch Normalization").

Each party keeps its own BatchNorm layers: weights, biases and running statistics
are saved in the client-state store after local training and loaded over the
received global weights before training and before local evaluation, so they are
never replaced by an average. Everything else is FedAvg. The server still averages
the BatchNorm entries of the replies, only to give its global model (used for
central evaluation, and by a party's first round) some statistics; no party ever
trains with them once it has its own. Its paper's metric is each party's own model
(the global weights with the party's BatchNorm layers) on the party's own test data:
fedsim's ``personal_*`` metrics (``eval.local_test``).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput


def bn_state_keys(model: nn.Module) -> list[str]:
    """State-dict keys of BatchNorm layers (weight, bias, running_mean, running_var,
    num_batches_tracked): what FedBN keeps local. In state_dict order."""
    owned: set[str] = set()
    for name, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, _BatchNorm):
            prefix = f"{name}." if name else ""
            owned.update(prefix + k for k in mod.state_dict())
    return [k for k in model.state_dict() if k in owned]


class FedBNRule(ClientRule):
    uses_state = True
    batchable = False

    def _load_own(self) -> None:
        if self.ctx.state:
            missing = self.ctx.model.load_state_dict(self.ctx.state, strict=False).unexpected_keys
            if missing:
                raise RuntimeError(f"FedBN state holds keys the model lacks: {missing[:3]}")

    on_train_begin = _load_own
    on_evaluate_begin = _load_own

    def on_train_end(self, steps: int) -> RuleOutput:
        sd = self.ctx.model.state_dict()
        keys = bn_state_keys(self.ctx.model)
        return RuleOutput(state={k: sd[k].detach().clone() for k in keys} if keys else None)


@register
class FedBN(Algorithm):
    name = "fedbn"
    summary = "BatchNorm layers stay local"
    paper = "Li et al. 2021, FedBN: Federated Learning on Non-IID Features via Local Batch Normalization"
    Rule = FedBNRule
    #: the paper's metric: each party's model (the global one with its own BatchNorm
    #: layers) on its own test data, evaluated as ``personal_*``
    personal = True
