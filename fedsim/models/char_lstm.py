"""Character LSTM for next-character prediction on Shakespeare (McMahan et al.,
"Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS
2017; LEAF's ``models/shakespeare/stacked_lstm.py``).

tokens (B, L) -> Embedding(80, 8) -> LSTM(8, 256) -> LSTM(256, 256) -> the output at the
last position = representation (d = 256). FedModel's classifier Linear(256, 80) gives the
logits of the next character (LEAF's 80-symbol alphabet, :mod:`fedsim.data.text`); with
``model.projection_head`` MOON's head reads the 256-d representation. ``model.dropout``
applies between the two LSTM layers (PyTorch's inter-layer dropout) and, by FedModel,
before the classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedsim.data.text import VOCAB_SIZE
from fedsim.models.registry import ModelError, register
from fedsim.schema.sections import ModelConfig

EMBED_DIM = 8
HIDDEN = 256
LAYERS = 2


class CharLSTMEncoder(nn.Module):
    """Embedding + two stacked LSTM layers; returns the last position's output."""

    input_dtype = torch.int64

    def __init__(self, vocab_size: int = VOCAB_SIZE, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, EMBED_DIM)
        self.lstm = nn.LSTM(EMBED_DIM, HIDDEN, num_layers=LAYERS, batch_first=True, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embedding(x))
        return out[:, -1, :]


@register(
    "char-lstm",
    tokens=True,
    summary="character LSTM for next-character prediction: Embedding(80, 8), two LSTM(256) layers",
    paper="McMahan et al. 2017, Communication-Efficient Learning; LEAF's stacked LSTM",
)
def build_char_lstm(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
    if len(input_shape) != 1:
        raise ModelError(f"model 'char-lstm' reads token sequences (L,); got input_shape {tuple(input_shape)}")
    return CharLSTMEncoder(VOCAB_SIZE, dropout=float(cfg.dropout)), HIDDEN
