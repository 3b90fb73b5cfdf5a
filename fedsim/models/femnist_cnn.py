"""LEAF's FEMNIST CNN (Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018;
``models/femnist/cnn.py``), the model of FedProx's and many FL papers' FEMNIST runs.

conv(C, 32, 5x5, same padding) ReLU maxpool2 -> conv(32, 64, 5x5, same) ReLU maxpool2
-> flatten (64 * H/4 * W/4 = 3136 at 28x28) -> Linear(3136, 2048) ReLU = representation
(d = 2048). The classifier Linear(2048, num_classes) (62 for FEMNIST) is FedModel's, and
so is the optional MOON projection head on the 2048-d representation.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedsim.models.registry import ModelError, register
from fedsim.schema.sections import ModelConfig

FEATURE_DIM = 2048


class FemnistCNNEncoder(nn.Module):
    """Two 5x5 conv layers (32, 64 channels, 'same' padding) with 2x2 max pooling, FC 2048."""

    def __init__(self, in_channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)  # 'same' for a 5x5 kernel
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(64 * (height // 4) * (width // 4), FEATURE_DIM)
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.relu3(self.fc(self.flatten(x)))


@register(
    "femnist-cnn",
    summary="LEAF's FEMNIST CNN: two 5x5 conv blocks (32, 64 channels), FC 2048",
    paper="Caldas et al. 2018, LEAF: A Benchmark for Federated Settings",
)
def build_femnist_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
    if len(input_shape) != 3:
        raise ModelError(
            f"model 'femnist-cnn' is a CNN and needs image input (C, H, W); got input_shape {tuple(input_shape)}"
        )
    c, h, w = input_shape
    if min(h, w) < 4:
        raise ModelError(f"model 'femnist-cnn' needs images of at least 4x4 (two 2x2 pools); got {h}x{w}")
    return FemnistCNNEncoder(c, h, w), FEATURE_DIM
