"""ResNet-18/34/50 in the CIFAR form (He et al., CVPR 2016; as used by MOON for CIFAR).

torchvision's ``resnet{18,34,50}(weights=None)`` with the ImageNet stem replaced for
small images: conv1 becomes a 3x3, stride 1, padding 1 conv (no bias) from C input
channels and the max-pool is removed, so a 32x32 input reaches layer4 at 4x4. ``fc`` is
an Identity, so the encoder returns the pooled 512 (r18/34) or 2048 (r50) features.
Nothing is downloaded.

``model.norm``: ``batch`` keeps torchvision's BatchNorm (FedBN keeps those layers
local); ``group`` puts GroupNorm with ``model.norm_groups`` groups (2: Hsieh et al.,
ICML 2020, "The Non-IID Data Quagmire of Decentralized Machine Learning", and the
ResNet-18-GN of Reddi et al., ICLR 2021, and FLUTE's Fed-CIFAR-100) in every BatchNorm's
place. GroupNorm has no running statistics, so it normalises non-IID batches the same
way in training and test, and a cohort of GroupNorm ResNets can train batched
(``engine.batch_clients``), which BatchNorm's in-place statistics forbid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from fedsim.models.registry import ModelError, register
from fedsim.schema.sections import ModelConfig
from fedsim.util.params import hp

# arch -> feature_dim (width of the pooled output of layer4)
_ARCHS: dict[str, int] = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def cifar_resnet(arch: str, in_channels: int, norm: str = "batch", groups: int = 2) -> tuple[nn.Module, int]:
    """torchvision ResNet with the CIFAR stem and no fc; returns (encoder, feature_dim)."""
    # imported here: torchvision costs ~1.4 s, and config validation imports this
    # package just to list the model names
    import torchvision

    feature_dim = _ARCHS[arch]
    # every norm layer's width is a multiple of 64, so any divisor of 64 fits (validated)
    norm_layer = nn.BatchNorm2d if norm == "batch" else (lambda width: nn.GroupNorm(groups, width))
    net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm_layer)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # the same init torchvision gives every other conv of the network (global RNG only)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, feature_dim


@dataclass
class ResNetParams(ModelConfig):
    """``model.*`` with ``resnet18``/``34``/``50``: the common keys and the normalisation layers."""

    norm: str = hp(
        "batch",
        choices=("batch", "group"),
        help="torchvision's BatchNorm, or GroupNorm in its place (no running statistics; batched cohorts)",
        source="torchvision's ResNet (BatchNorm); GroupNorm: Hsieh et al. 2020",
    )
    norm_groups: int = hp(
        2,
        help="GroupNorm's groups with model.norm: group",
        source="Hsieh et al. 2020, Reddi et al. 2021 (ResNet-18-GN)",
        text="a divisor of 64",
    )


def _check_norm(cfg: Any) -> str | None:
    m = cfg.model
    if m.norm != "group" and m.norm_groups != ResNetParams.norm_groups:
        return f"config key 'model.norm_groups' is read only with model.norm group, not {m.norm!r}: remove it"
    if m.norm_groups < 1 or 64 % m.norm_groups:
        # every norm layer of the CIFAR ResNets is 64, 128, ... 2048 channels wide
        return (
            f"config key 'model.norm_groups' = {m.norm_groups}: must divide 64 (1, 2, 4, 8, 16, 32, 64), "
            "the width of every ResNet norm layer being a multiple of 64"
        )
    return None


def _builder(arch: str):
    def build(cfg: ResNetParams, input_shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, int]:
        if len(input_shape) != 3:
            raise ModelError(
                f"model '{arch}' is a CNN and needs image input (C, H, W); got input_shape {tuple(input_shape)}"
                " — use model.name=mlp for tabular data"
            )
        return cifar_resnet(arch, int(input_shape[0]), cfg.norm, cfg.norm_groups)

    build.__name__ = f"build_{arch}"
    build.__doc__ = f"{arch}, CIFAR form."
    return build


for _arch in _ARCHS:
    register(
        _arch,
        check=_check_norm,
        summary=f"{_arch} in the CIFAR form: a 3x3 stem, no max-pool ({_ARCHS[_arch]}-d features)",
        paper="He et al. 2016, Deep Residual Learning; MOON's CIFAR ResNets",
        Params=ResNetParams,
    )(_builder(_arch))
