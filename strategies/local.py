"""Local training only: every party trains its own model and nothing is aggregated.

The lower bound personalised-FL papers compare against (PFLlib's and FL-bench's
"Local"). Client: the party loads its own model (the global initial model before its
first round), trains it for ``train.epochs`` and keeps it in the client-state store;
the reply carries no weights. Server: the global model never changes,
``w^{t+1} = w^t = w^0``: its central test accuracy stays at the initial model's.
Each party's own model is its ``personal_*`` model.
"""

from __future__ import annotations

from .registry import Algorithm, register
from .rule import ClientRule, RuleOutput


class LocalRule(ClientRule):
    uses_state = True
    batchable = False

    def _load_own(self) -> None:
        if self.ctx.state:
            self.ctx.model.load_state_dict(self.ctx.state)

    on_train_begin = _load_own
    on_evaluate_begin = _load_own

    def on_train_end(self, steps: int) -> RuleOutput:
        state = {k: v.detach().cpu().clone() for k, v in self.ctx.model.state_dict().items()}
        return RuleOutput(state=state, shared_keys=[])


@register
class Local(Algorithm):
    name = "local"
    summary = "each party trains alone; the global model never changes"
    paper = "the no-collaboration baseline of personalised FL (e.g. Collins et al. 2021)"
    Rule = LocalRule
    personal = True
    client_dp_refusal = (
        "it shares nothing with the server, so there is nothing to clip and noise (use privacy.mode none)"
    )
