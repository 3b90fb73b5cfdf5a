"""Building models: shapes, state-dict layout, heads, dropout, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from fedsim.config.load import load_config
from fedsim.errors import ConfigError
from fedsim.models import FedModel, ModelError, available, build_model, register
from fedsim.models import registry as registry_mod
from fedsim.schema.sections import ModelConfig

ALL = ["simple-cnn", "mlp", "resnet18", "resnet34", "resnet50", "femnist-cnn", "char-lstm"]
IMAGE_SHAPES = [(3, 32, 32), (1, 28, 28)]
TOKEN_SHAPE = (20,)  # a short character sequence (LEAF's are 80 long)


def inputs(model: FedModel, batch: int, shape: tuple) -> torch.Tensor:
    """Random inputs of the kind the model reads: tokens for a sequence model, else floats."""
    if model.input_dtype == torch.int64:
        return torch.randint(0, 80, (batch, *shape))
    return torch.randn(batch, *shape)


def cfg(name: str, **kw) -> ModelConfig:
    return ModelConfig(name=name, **kw)


def test_available_lists_every_architecture_in_order():
    assert available() == ALL


# every model on every input it takes, with and without the head; the CNNs take images
# only (see test_cnn_rejects_tabular_input)
CASES = [
    (name, shape, head)
    for name in ALL
    for shape in ([TOKEN_SHAPE] if name == "char-lstm" else IMAGE_SHAPES + ([(60,)] if name == "mlp" else []))
    for head in (False, True)
]


@pytest.mark.parametrize(
    "name,shape,head", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
)
def test_shapes_and_state_dict_layout(name, shape, head):
    num_classes, proj_dim, batch = 7, 32, 3
    torch.manual_seed(0)
    model = build_model(cfg(name, projection_head=head, proj_dim=proj_dim), shape, num_classes)
    assert isinstance(model, FedModel)
    model.eval()
    x = inputs(model, batch, shape)
    with torch.no_grad():
        logits = model(x)
        h, z, logits2 = model.forward_all(x)
    assert logits.shape == (batch, num_classes)
    assert torch.equal(logits, logits2)
    assert h.shape == (batch, model.feature_dim)
    if head:
        assert z.shape == (batch, proj_dim)
        assert model.classifier.in_features == proj_dim
        assert isinstance(model.projection, nn.Sequential)
        lin1, relu, lin2 = model.projection
        assert (lin1.in_features, lin1.out_features) == (model.feature_dim, model.feature_dim)
        assert isinstance(relu, nn.ReLU)
        assert (lin2.in_features, lin2.out_features) == (model.feature_dim, proj_dim)
    else:
        assert model.projection is None
        assert z is h
        assert model.classifier.in_features == model.feature_dim
    keys = list(model.state_dict())
    assert all(k.startswith(("encoder.", "projection.", "classifier.")) for k in keys), keys
    assert any(k.startswith("projection.") for k in keys) == head
    assert keys[-2:] == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("shape,expected_flat", [((3, 32, 32), 16 * 5 * 5), ((1, 28, 28), 16 * 4 * 4)])
def test_simple_cnn_layout(shape, expected_flat):
    model = build_model(cfg("simple-cnn"), shape, 10)
    enc = model.encoder
    assert model.feature_dim == 84
    assert (enc.conv1.in_channels, enc.conv1.out_channels, enc.conv1.kernel_size) == (shape[0], 6, (5, 5))
    assert (enc.conv2.in_channels, enc.conv2.out_channels, enc.conv2.kernel_size) == (6, 16, (5, 5))
    assert (enc.fc1.in_features, enc.fc1.out_features) == (expected_flat, 120)
    assert (enc.fc2.in_features, enc.fc2.out_features) == (120, 84)
    assert (model.classifier.in_features, model.classifier.out_features) == (84, 10)


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_resnet_cifar_stem(arch, dim):
    model = build_model(cfg(arch), (1, 28, 28), 10)
    enc = model.encoder
    assert model.feature_dim == dim
    assert enc.conv1.weight.shape == (64, 1, 3, 3)
    assert (enc.conv1.stride, enc.conv1.padding, enc.conv1.bias) == ((1, 1), (1, 1), None)
    assert isinstance(enc.maxpool, nn.Identity) and isinstance(enc.fc, nn.Identity)


def test_resnet18_parameter_count_matches_torchvision_adjusted():
    tv = sum(p.numel() for p in torchvision.models.resnet18(weights=None).parameters())
    assert tv == 11_689_512
    # 7x7 stem -> 3x3 stem; 1000-way fc -> 10-way classifier
    expected = tv - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3 - (512 * 1000 + 1000) + (512 * 10 + 10)
    model = build_model(cfg("resnet18"), (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == expected == 11_173_962


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_groupnorm_resnet_replaces_every_batchnorm(arch):
    """model.norm=group: GroupNorm (2 groups, Hsieh et al. 2020) wherever torchvision
    puts BatchNorm; the same parameters (GroupNorm's affine weight and bias are
    BatchNorm's), no running statistics."""
    bn = build_model(cfg(arch), (3, 32, 32), 10)
    gn = build_model(ModelConfig(name=arch, norm="group"), (3, 32, 32), 10)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    gns = [m for m in gn.modules() if isinstance(m, nn.GroupNorm)]
    assert n_bn > 0 and len(gns) == n_bn and not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    assert {m.num_groups for m in gns} == {2}
    assert [(k, v.shape) for k, v in gn.named_parameters()] == [(k, v.shape) for k, v in bn.named_parameters()]
    assert not any("running" in k for k in gn.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert gn(x).shape == (2, 10)


def test_mlp_widths_and_logistic_regression():
    model = build_model(cfg("mlp", hidden=[200, 100]), (1, 28, 28), 10)
    linears = [m for m in model.encoder if isinstance(m, nn.Linear)]
    assert [(line.in_features, line.out_features) for line in linears] == [(784, 200), (200, 100)]
    assert [k for k in model.state_dict() if k.startswith("encoder.")] == [
        "encoder.fc1.weight",
        "encoder.fc1.bias",
        "encoder.fc2.weight",
        "encoder.fc2.bias",
    ]
    assert model.feature_dim == 100

    logreg = build_model(cfg("mlp", hidden=[]), (60,), 10)
    assert logreg.feature_dim == 60
    assert sum(p.numel() for p in logreg.encoder.parameters()) == 0
    assert [k for k in logreg.state_dict()] == ["classifier.weight", "classifier.bias"]
    assert sum(p.numel() for p in logreg.parameters()) == 60 * 10 + 10
    x = torch.randn(4, 60)
    expected = x @ logreg.classifier.weight.T + logreg.classifier.bias
    torch.testing.assert_close(logreg(x), expected)


def test_dropout_applied_once_per_layer_and_classifier_keys_stable():
    plain = build_model(cfg("mlp", hidden=[50, 40], dropout=0.0), (60,), 5)
    drop = build_model(cfg("mlp", hidden=[50, 40], dropout=0.5), (60,), 5)
    assert list(plain.state_dict()) == list(drop.state_dict())
    assert isinstance(drop.classifier, nn.Linear)
    dropouts = [m for m in drop.modules() if isinstance(m, nn.Dropout)]
    # between the two hidden layers, and before the classifier; never twice in a row
    assert len(dropouts) == 2 and all(d.p == 0.5 for d in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    x = torch.randn(8, 60)
    drop.train()
    torch.manual_seed(1)
    a = drop(x)
    b = drop(x)
    assert not torch.equal(a, b)
    drop.eval()
    torch.testing.assert_close(drop(x), drop(x))

    cnn = build_model(cfg("simple-cnn", dropout=0.3), (3, 32, 32), 10)
    assert sum(isinstance(m, nn.Dropout) for m in cnn.modules()) == 2  # after fc1, after fc2 (= before classifier)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_weights(name):
    shape = TOKEN_SHAPE if name == "char-lstm" else (3, 32, 32)

    def state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(cfg(name, projection_head=True, proj_dim=16), shape, 10).state_dict()

    a, b = state(3), state(3)
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if name in ("simple-cnn", "mlp"):  # one differing seed is enough evidence; keep it cheap
        c = state(4)
        assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", ["simple-cnn", "resnet18", "resnet50", "femnist-cnn"])
def test_cnn_rejects_tabular_input(name):
    with pytest.raises(ValueError, match="image input"):
        build_model(cfg(name), (60,), 10)
    with pytest.raises(ConfigError):
        build_model(cfg(name), (60,), 10)


def test_simple_cnn_rejects_too_small_images():
    with pytest.raises(ValueError, match="14x14"):
        build_model(cfg("simple-cnn"), (3, 12, 12), 10)


def test_unknown_model_names_nearest():
    with pytest.raises(ModelError, match="did you mean 'resnet18'"):
        build_model(cfg("resnet19"), (3, 32, 32), 10)


def test_register_a_new_architecture():
    @register("tiny-test-net")
    def build(c: ModelConfig, input_shape, num_classes):
        return nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(input_shape), 8)), 8

    try:
        assert "tiny-test-net" in available()
        model = build_model(cfg("tiny-test-net", projection_head=True, proj_dim=4), (2, 3), 3)
        assert model(torch.randn(5, 2, 3)).shape == (5, 3)
        with pytest.raises(ValueError, match="already registered"):
            register("tiny-test-net")(lambda c, s, n: (nn.Identity(), 1))
    finally:
        registry_mod.unregister("tiny-test-net")
    assert available() == ALL


def test_simple_cnn_batch_norm_adds_fedbns_layers_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    plain = build_model(ModelConfig(name="simple-cnn"), (1, 28, 28), 10)
    torch.manual_seed(0)
    bn = build_model(ModelConfig(name="simple-cnn", batch_norm=True), (1, 28, 28), 10)
    extra = [k for k in bn.state_dict() if k not in plain.state_dict()]
    assert sorted({k.split(".")[1] for k in extra}) == ["bn1", "bn2", "bn3", "bn4"]
    assert len(extra) == 4 * 5  # weight, bias, running_mean, running_var, num_batches_tracked
    for k, v in plain.state_dict().items():  # BatchNorm draws nothing from the RNG
        assert torch.equal(v, bn.state_dict()[k])
    assert bn(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize(
    "model, message",
    [
        ({"name": "simple-cnn", "hidden": [50]}, "model.hidden' is read only with model.name mlp"),
        ({"name": "mlp", "batch_norm": True}, "model.batch_norm' is read only with model.name simple-cnn"),
        ({"name": "simple-cnn", "norm": "group"}, "model.norm' is read only with model.name resnet18"),
        ({"name": "resnet18", "norm_groups": 4}, "model.norm_groups' is read only with model.norm group"),
        ({"name": "resnet18", "norm": "group", "norm_groups": 3}, "must divide 64"),
        ({"name": "resnet18", "norm": "layer"}, "allowed: batch, group"),
    ],
)
def test_model_keys_of_another_model_are_refused(model, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"model": model})
