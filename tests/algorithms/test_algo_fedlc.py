"""FedLC (Zhang et al. 2022): cross-entropy of z - tau n_c^{-1/4}, absent classes out."""

import math

import pytest
import torch
import torch.nn.functional as F
from rule_context import rule_context

import fedsim
from strategies.fedlc import FedLCParams, FedLCRule, calibrated_loss, calibration


def test_calibrated_loss_on_fixed_logits_by_hand():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    y = torch.tensor([0, 1])
    counts = torch.tensor([16, 1, 81, 0])  # n^{-1/4} = 0.5, 1, 1/3; class 3 absent
    tau = 0.8
    offsets = calibration(counts, tau)
    torch.testing.assert_close(offsets[:3], torch.tensor([0.4, 0.8, 0.8 / 3]))
    assert math.isinf(float(offsets[3]))
    expected = 0.0
    for z, label in zip(logits.tolist(), y.tolist()):
        cal = [z[0] - 0.4, z[1] - 0.8, z[2] - 0.8 / 3]  # class 3 drops out of the softmax
        expected += -(cal[label] - math.log(sum(math.exp(c) for c in cal)))
    expected /= 2
    assert float(calibrated_loss(logits, y, offsets)) == pytest.approx(expected, rel=1e-6)


def test_tau_zero_is_cross_entropy():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 1, 1, 0])
    offsets = calibration(torch.tensor([3, 0, 7]), 0.0)
    assert torch.equal(offsets, torch.zeros(3))
    torch.testing.assert_close(calibrated_loss(logits, y, offsets), F.cross_entropy(logits, y))


def test_the_rule_counts_the_partys_own_labels():
    model = torch.nn.Linear(2, 3)
    labels = torch.tensor([0, 0, 0, 0, 2])
    ctx = rule_context(
        model,
        lambda: torch.nn.Linear(2, 3),
        params=FedLCParams(name="fedlc", tau=1.0),
        train_labels=labels,
        num_classes=3,
    )
    rule = FedLCRule(ctx)
    rule.on_train_begin()
    torch.testing.assert_close(rule.offsets[[0, 2]], torch.tensor([4**-0.25, 1.0]))
    assert math.isinf(float(rule.offsets[1]))


def test_tau_zero_run_equals_fedavg_and_default_learns(tmp_path, tiny):
    lc0 = fedsim.run(tiny(strategy={"name": "fedlc", "tau": 0.0}), out=tmp_path / "lc0")
    avg = fedsim.run(tiny(strategy={"name": "fedavg"}), out=tmp_path / "avg")
    assert (lc0.run_dir / "model.pt").read_bytes() == (avg.run_dir / "model.pt").read_bytes()
    lc = fedsim.run(tiny(strategy={"name": "fedlc"}), out=tmp_path / "lc")
    assert lc.summary["test_accuracy"] > 0.25
