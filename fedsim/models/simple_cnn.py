"""SimpleCNN of NIID-Bench (Li et al., "Federated Learning on Non-IID Data Silos: An
Experimental Study", ICDE 2022) and MOON's ``SimpleCNN_header``.

conv(C, 6, 5) ReLU maxpool2 -> conv(6, 16, 5) ReLU maxpool2 -> flatten
-> Linear(16 * h * w, 120) ReLU -> Linear(120, 84) ReLU = representation (d = 84).
``h = w = ((H - 4) // 2 - 4) // 2``: 5 at 32x32, 4 at 28x28. The classifier
Linear(84, num_classes) belongs to :class:`FedModel`.

``model.batch_norm: true`` puts a BatchNorm after each conv and hidden FC layer
(before its ReLU), as the CNN of FedBN's experiments (Li et al. 2021) does: the model
that gives FedBN local BatchNorm layers to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from fedsim.models.registry import ModelError, register
from fedsim.schema.sections import ModelConfig
from fedsim.util.params import hp

FEATURE_DIM = 84


def _after_conv_pool(size: int) -> int:
    # conv 5x5, no padding (-4), then maxpool 2 (floor // 2)
    return (size - 4) // 2


class SimpleCNNEncoder(nn.Module):
    """The two conv blocks and the two hidden FC layers of SimpleCNN.

    ``dropout`` > 0 adds Dropout after fc1's ReLU; the one after fc2 is FedModel's
    dropout before the classifier, so the representation ``h`` itself is dropout-free.
    """

    def __init__(
        self, in_channels: int, height: int, width: int, dropout: float = 0.0, batch_norm: bool = False
    ) -> None:
        super().__init__()
        h2 = _after_conv_pool(_after_conv_pool(height))
        w2 = _after_conv_pool(_after_conv_pool(width))
        self.flat_dim = 16 * h2 * w2
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(self.flat_dim, 120)
        self.relu3 = nn.ReLU()
        self.drop1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(120, FEATURE_DIM)
        self.relu4 = nn.ReLU()
        # BatchNorm has no random initialisation: without it, the weights are unchanged
        self.bn1, self.bn2, self.bn3, self.bn4 = (
            (nn.BatchNorm2d(6), nn.BatchNorm2d(16), nn.BatchNorm1d(120), nn.BatchNorm1d(FEATURE_DIM))
            if batch_norm
            else (nn.Identity(), nn.Identity(), nn.Identity(), nn.Identity())
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.flatten(x)
        x = self.drop1(self.relu3(self.bn3(self.fc1(x))))
        return self.relu4(self.bn4(self.fc2(x)))


@dataclass
class SimpleCNNParams(ModelConfig):
    """``model.*`` with ``simple-cnn``: the common keys and FedBN's BatchNorm."""

    batch_norm: bool = hp(
        False,
        help="BatchNorm after each conv and hidden FC layer (FedBN's CNN)",
        source="NIID-Bench's SimpleCNN has none; FedBN (Li et al. 2021) adds them",
    )


@register(
    "simple-cnn",
    summary="NIID-Bench's and MOON's SimpleCNN: two 5x5 conv blocks, FC 120, FC 84 (images of at least 14x14)",
    paper="Li et al. 2022, Federated Learning on Non-IID Data Silos (NIID-Bench)",
    Params=SimpleCNNParams,
)
def build_simple_cnn(cfg: SimpleCNNParams, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
    if len(input_shape) != 3:
        raise ModelError(
            f"model 'simple-cnn' is a CNN and needs image input (C, H, W); got input_shape {tuple(input_shape)}"
            " — use model.name=mlp for tabular data"
        )
    c, h, w = input_shape
    if min(h, w) < 14:
        raise ModelError(
            f"model 'simple-cnn' needs images of at least 14x14 (two 5x5 convs and two 2x2 pools); got {h}x{w}"
        )
    return SimpleCNNEncoder(c, h, w, dropout=float(cfg.dropout), batch_norm=bool(cfg.batch_norm)), FEATURE_DIM
