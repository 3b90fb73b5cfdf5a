"""Attacks and defences with the personal-layer algorithms (FedPer, FedRep, FedBABU,
LG-FedAvg): their replies carry only the shared layers, so the server rules work in the
space of the shared entries (they crashed with ``KeyError: 'classifier.weight'`` after
round 1, the update space built from the whole global model)."""

from __future__ import annotations

import pytest
import torch

import fedsim
from fedsim.models import build_model

PAIRS = [
    ("fedper", {"defence": {"name": "norm-bound"}}),
    ("lg-fedavg", {"attack": {"name": "ipm", "parties": [1]}}),
    ("fedrep", {"defence": {"name": "centred-clip"}, "attack": {"name": "alie", "parties": [2]}}),
    ("fedbabu", {"attack": {"name": "sign-flip", "parties": [0]}, "defence": {"name": "norm-bound"}}),
]
FAST = {"fedper", "lg-fedavg"}


@pytest.mark.parametrize(
    "name, sections",
    [p if p[0] in FAST else pytest.param(*p, marks=pytest.mark.slow) for p in PAIRS],
    ids=[p[0] for p in PAIRS],
)
def test_personal_layer_algorithms_run_with_server_rules_over_the_shared_layers(tmp_path, tiny, name, sections):
    cfg = tiny(strategy={"name": name}, eval={"local_test": "split", "train_sample": 0}, **sections)
    res = fedsim.run(cfg, out=tmp_path / "run")
    assert res.summary["status"] == "finished" and len(res.history) == 2
    final = torch.load(res.run_dir / "model.pt", weights_only=True)
    personal = {"fedper": "classifier.", "fedrep": "classifier.", "fedbabu": "classifier.", "lg-fedavg": "encoder."}
    prefix = personal[name]
    # the personal layers never left the parties: the server's copy is the initial model's
    init = _initial(res)
    assert all(torch.equal(final[k], init[k]) for k in final if k.startswith(prefix))
    assert any(
        not torch.equal(final[k], init[k]) for k in final if not k.startswith(prefix) and final[k].is_floating_point()
    )
    if "defence" in sections:
        assert all("defence_clipped" in r for r in res.history)


def _initial(res) -> dict[str, torch.Tensor]:
    from fedsim.util.seeding import derive, seed_torch

    cfg = res.config
    seed_torch(derive(cfg.seed, "init"))
    model = build_model(cfg.model, (3, 16, 16), 4)
    return {k: v.detach() for k, v in model.state_dict().items()}
