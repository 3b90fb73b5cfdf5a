"""The clients' side of the row's end: their own validation (``federation.fraction_evaluate``:
the example-weighted ``val_accuracy`` and ``val_loss`` and the spread of the accuracy)
and the spread of the cohort's training accuracy."""

from __future__ import annotations

from fedsim.measures.metrics import spread
from fedsim.server.callbacks.base import RoundCallback, RoundRecord


class ClientSpread(RoundCallback):
    def on_round(self, rec: RoundRecord) -> None:
        rl, row = rec.log, rec.row
        if rl.eval_outcomes:
            row["val_accuracy"] = rl.eval_metrics.get("val_accuracy")
            row["val_loss"] = rl.eval_metrics.get("val_loss")
            accs = spread([o.metrics.get("val_accuracy") for o in rl.eval_outcomes])
            row.update({f"val_accuracy_{k}": v for k, v in accs.items()})
        train = spread([o.metrics.get("train_accuracy") for o in rl.outcomes])
        row.update({f"client_train_accuracy_{k}": v for k, v in train.items() if k != "mean"})
