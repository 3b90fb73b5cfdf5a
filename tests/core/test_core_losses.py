"""Focal loss and the training loss against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from fedsim.client.training import focal_loss


def test_focal_multiclass_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)
    pt = [float(p[0, 0]), float(p[1, 2])]
    gamma = 2.0
    expected = sum(-((1 - q) ** gamma) * math.log(q) for q in pt) / 2
    assert float(focal_loss(logits, y, gamma)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_loss(logits, y, gamma, alpha=0.5)) == pytest.approx(0.5 * expected, rel=1e-6)


def test_focal_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert float(focal_loss(logits, y, 0.0)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)


def test_focal_binary_sigmoid_and_alpha_by_hand():
    z = torch.tensor([[1.0], [-0.5]])
    y = torch.tensor([1, 0])
    p1 = 1 / (1 + math.exp(-1.0))  # P(y=1) for sample 0
    p0 = 1 - 1 / (1 + math.exp(0.5))  # P(y=0) for sample 1
    gamma, alpha = 2.0, 0.25
    expected = (-alpha * (1 - p1) ** gamma * math.log(p1) - (1 - alpha) * (1 - p0) ** gamma * math.log(p0)) / 2
    assert float(focal_loss(z, y, gamma, alpha)) == pytest.approx(expected, rel=1e-6)
