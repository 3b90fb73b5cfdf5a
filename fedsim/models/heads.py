"""FedModel: encoder -> [projection head] -> classifier, one layout for every architecture.

The projection head is MOON's (Li, He, Song, "Model-Contrastive Federated Learning",
CVPR 2021): ``z = W2 ReLU(W1 h)`` with ``W1: d -> d`` and ``W2: d -> proj_dim``, and the
classifier reads ``z``. MOON's contrastive term compares the ``z`` of the local, the
global and the previous local model:
``l_con = -log( e^{cos(z, z_glob)/T} / (e^{cos(z, z_glob)/T} + e^{cos(z, z_prev)/T}) )``.

State-dict keys are ``encoder.*``, ``projection.*`` (head only) and ``classifier.weight``
/ ``classifier.bias`` whatever the dropout, so strategies that split a model by part
(FedBN, MOON, personalised heads) can rely on the names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def moon_projection_head(feature_dim: int, proj_dim: int) -> nn.Sequential:
    """MOON's head: Linear(d, d), ReLU, Linear(d, proj_dim)."""
    return nn.Sequential(
        nn.Linear(feature_dim, feature_dim),
        nn.ReLU(inplace=False),
        nn.Linear(feature_dim, proj_dim),
    )


class FedModel(nn.Module):
    """encoder -> [projection head] -> classifier. One layout for every architecture so that
    MOON, FedBN and the trainer treat all models alike.

    ``dropout`` > 0 applies one ``nn.Dropout`` to the classifier's input. It lives in
    ``self.dropout`` (no parameters), not inside ``classifier``, so the classifier is
    always a plain ``nn.Linear``. Encoders put their own dropout between hidden layers,
    never on their output, so no input sees two dropouts in a row.
    """

    encoder: nn.Module
    projection: nn.Module | None
    classifier: nn.Module
    feature_dim: int

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        *,
        projection_head: bool = False,
        proj_dim: int = 256,
        dropout: float = 0.0,
        input_shape: tuple[int, ...] | None = None,
        name: str | None = None,
        input_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.name = name
        # what the encoder reads: float32 inputs, or int64 tokens (fedsim inspect's dummy input)
        self.input_dtype = input_dtype
        if projection_head:
            self.projection = moon_projection_head(self.feature_dim, int(proj_dim))
            self.out_dim = int(proj_dim)
        else:
            self.projection = None
            self.out_dim = self.feature_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(self.out_dim, self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits."""
        return self.forward_all(x)[2]

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(h, z, logits)``: representation, projection (``h`` itself without a head), logits."""
        h = self.encoder(x)
        if h.dim() != 2:
            h = h.flatten(1)
        z = self.projection(h) if self.projection is not None else h
        logits = self.classifier(self.dropout(z))
        return h, z, logits

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}, out_dim={self.out_dim}, num_classes={self.num_classes}"
