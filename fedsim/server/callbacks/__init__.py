"""A round's records as small callbacks, one file each, run in the order stated once here.

:func:`round_callbacks` is that order. Each callback adds its part to the round's
``metrics.jsonl`` row (whose keys keep this order) or acts on what those before it
decided:

1. :mod:`.privacy`: the round's release into the ledger, epsilon, the budget's stop;
2. :mod:`.training`: the cohort's training replies (the bytes so far too) and the server's own values;
   :mod:`.clock` (with a ``system`` source): the round on the simulated clock;
   :mod:`.budget`: the bytes so far against ``comm.budget_mb``, the budget's stop;
3. :mod:`.heterogeneity`: the cohort's model heterogeneity;
4. :mod:`.divergence` (training): whether the round diverged, and the run stops;
5. :mod:`.evaluation`: the global model on the test set, when due;
6. :mod:`.party_evaluation`: every party's own test data, when the model was evaluated;
7. :mod:`.divergence` (test): the test loss checked, ``diverged`` recorded;
8. :mod:`.validation`: the clients' validation and the spread of their accuracies;
9. :mod:`.records`: ``metrics.jsonl``, ``clients.jsonl``, ``parties.jsonl``;
10. :mod:`.checkpoints`: the checkpoint, when due (after the records it makes durable);
11. :mod:`.trackers`: the row to the experiment trackers;
12. :mod:`.progress`: the row to the process that started the run.

A step the config leaves out (no privacy, no model heterogeneity, no per-party
evaluation, nobody listening) is not in the list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedsim.inputs.adversary import AttackEvaluator, malicious_parties
from fedsim.inputs.run_inputs import Experiment
from fedsim.privacy.run import PrivacyRun
from fedsim.server.callbacks.base import RoundCallback, RoundRecord, RunProgress
from fedsim.server.callbacks.budget import ByteBudget
from fedsim.server.callbacks.checkpoints import Checkpoints
from fedsim.server.callbacks.clock import ClockRow
from fedsim.server.callbacks.divergence import DivergenceCheck, nonfinite_majority
from fedsim.server.callbacks.evaluation import CentralEvaluation
from fedsim.server.callbacks.heterogeneity import ModelHeterogeneity
from fedsim.server.callbacks.party_evaluation import PartyEvaluation
from fedsim.server.callbacks.privacy import PrivacyAccounting
from fedsim.server.callbacks.progress import Progress
from fedsim.server.callbacks.records import Records
from fedsim.server.callbacks.trackers import Trackers
from fedsim.server.callbacks.training import TrainingRow
from fedsim.server.callbacks.validation import ClientSpread
from fedsim.server.evaluation import CentralEvaluator
from fedsim.server.party_eval import PartyEvaluator
from fedsim.system.run import SimulatedClock
from fedsim.trackers import RunTrackers, TrackingContext
from strategies.strategy import FedsimStrategy

__all__ = ["RoundCallback", "RoundRecord", "RunProgress", "nonfinite_majority", "round_callbacks"]


def round_callbacks(
    exp: Experiment,
    run: RunProgress,
    strategy: FedsimStrategy,
    evaluator: CentralEvaluator,
    parties: PartyEvaluator | None,
    privacy: PrivacyRun | None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    tracking: TrackingContext | None = None,
) -> list[RoundCallback]:
    """The round's callbacks of this run, in their order (module docstring)."""
    cfg, store = exp.cfg, exp.store
    clock = next((e for e in strategy.extensions if isinstance(e, SimulatedClock)), None)
    malicious = frozenset(malicious_parties(cfg))
    steps: list[RoundCallback | None] = [
        PrivacyAccounting(privacy) if privacy is not None else None,
        TrainingRow(cfg, run),
        ClockRow(clock, store, malicious) if clock is not None else None,
        ByteBudget(cfg.comm.budget_mb) if cfg.comm.budget_mb is not None else None,
        ModelHeterogeneity() if cfg.eval.model_heterogeneity else None,
        DivergenceCheck(cfg, run, store.root.name, after_evaluation=False),
        CentralEvaluation(cfg, evaluator, AttackEvaluator(cfg, exp.bundle, evaluator.device)),
        PartyEvaluation(parties) if parties is not None and parties.enabled else None,
        DivergenceCheck(cfg, run, store.root.name, after_evaluation=True),
        ClientSpread(),
        Records(store, run, malicious),
        Checkpoints(cfg, store, strategy, run),
        # trackers get every row as it is written (a resumed run's history too, to skip what they hold)
        Trackers(RunTrackers(cfg, store.root, run.history, tracking)),
        Progress(on_round) if on_round is not None else None,
    ]
    return [step for step in steps if step is not None]
