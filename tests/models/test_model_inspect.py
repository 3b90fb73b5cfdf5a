"""inspect_model: parameter and FLOP counts against hand computation; BatchNorm helpers."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedsim.models import available, build_model, format_report, has_batchnorm, inspect_model
from fedsim.schema.sections import ModelConfig
from strategies.fedbn import bn_state_keys


def conv_flops(cout: int, hout: int, wout: int, cin: int, kh: int, kw: int) -> int:
    return 2 * cout * hout * wout * cin * kh * kw


def rows_by_name(report):
    return {r.name: r for r in report.rows}


def test_hand_counts_conv_bn_relu_pool_linear():
    model = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4),  # AlexNet's first layer
        nn.BatchNorm2d(96),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(96 * 6 * 6, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
    )
    report = inspect_model(model, (3, 63, 63))
    rows = rows_by_name(report)
    hout = (63 - 11) // 4 + 1  # 14
    pooled = (hout - 3) // 2 + 1  # 6
    assert (hout, pooled) == (14, 6)

    assert rows["0"].params == (3 * 11 * 11 + 1) * 96 == 34_944
    assert rows["0"].flops == conv_flops(96, hout, hout, 3, 11, 11)
    assert rows["0"].output_shape == (1, 96, hout, hout)
    assert rows["1"].params == 2 * 96  # running stats are buffers, not parameters
    assert rows["1"].flops == 0
    assert rows["2"].params == rows["3"].params == 0
    assert rows["2"].flops == rows["3"].flops == 0
    assert rows["3"].output_shape == (1, 96, pooled, pooled)
    assert rows["7"].params == 120 * 84 + 84
    assert rows["7"].flops == 2 * 120 * 84
    assert rows["7"].output_shape == (1, 84)

    total = sum(p.numel() for p in model.parameters())
    assert report.total_params == report.trainable_params == total == sum(r.params for r in report.rows)
    assert report.total_flops == sum(r.flops for r in report.rows)
    assert report.total_flops == conv_flops(96, hout, hout, 3, 11, 11) + 2 * 96 * 36 * 120 + 2 * 120 * 84
    # fp32 size of parameters + buffers (BN: running_mean, running_var, num_batches_tracked)
    assert report.size_mb == (total + 96 + 96 + 1) * 4 / 2**20


def test_trainable_params_exclude_frozen():
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
    model[0].requires_grad_(False)
    report = inspect_model(model, (10,))
    assert report.total_params == 55 + 12
    assert report.trainable_params == 12


def test_simple_cnn_totals_by_hand():
    model = build_model(ModelConfig(name="simple-cnn"), (3, 32, 32), 10)
    report = inspect_model(model, (3, 32, 32))
    params = {
        "encoder.conv1": 3 * 6 * 5 * 5 + 6,
        "encoder.conv2": 6 * 16 * 5 * 5 + 16,
        "encoder.fc1": 16 * 5 * 5 * 120 + 120,
        "encoder.fc2": 120 * 84 + 84,
        "classifier": 84 * 10 + 10,
    }
    flops = {
        "encoder.conv1": conv_flops(6, 28, 28, 3, 5, 5),
        "encoder.conv2": conv_flops(16, 10, 10, 6, 5, 5),
        "encoder.fc1": 2 * 400 * 120,
        "encoder.fc2": 2 * 120 * 84,
        "classifier": 2 * 84 * 10,
    }
    rows = rows_by_name(report)
    for name in params:
        assert rows[name].params == params[name], name
        assert rows[name].flops == flops[name], name
    assert params["encoder.conv1"] == 456
    assert report.total_params == sum(params.values()) == 62_006
    assert report.total_flops == sum(flops.values()) == 1_303_440
    assert report.size_mb == 62_006 * 4 / 2**20
    assert rows["encoder.pool2"].output_shape == (1, 16, 5, 5)
    assert rows["classifier"].output_shape == (1, 10)


def test_resnet18_totals():
    model = build_model(ModelConfig(name="resnet18"), (3, 32, 32), 10)
    report = inspect_model(model, (3, 32, 32))
    assert report.total_params == 11_173_962
    # every conv: 2 * Cout * Hout * Wout * Cin * kh * kw at its own resolution
    conv_total = 0
    for row in report.rows:
        if row.kind == "Conv2d":
            conv = model.get_submodule(row.name)
            _, cout, hout, wout = row.output_shape
            kh, kw = conv.kernel_size
            conv_total += conv_flops(cout, hout, wout, conv.in_channels, kh, kw)
            assert row.flops == conv_flops(cout, hout, wout, conv.in_channels, kh, kw), row.name
    assert report.total_flops == conv_total + 2 * 512 * 10 == 1_110_845_440
    bn_rows = [r for r in report.rows if r.kind == "BatchNorm2d"]
    assert len(bn_rows) == 20 and all(r.flops == 0 for r in bn_rows)


def test_totals_equal_flop_counter_for_every_model():
    for name in available():
        if name == "char-lstm":  # the counter does not see the fused LSTM: test_char_lstm_flops_by_formula
            continue
        shape = (60,) if name == "mlp" else (3, 32, 32)
        model = build_model(ModelConfig(name=name, projection_head=True, proj_dim=32), shape, 10)
        report = inspect_model(model, shape)
        counter = FlopCounterMode(display=False)
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(1, *shape))
        assert report.total_flops == counter.get_total_flops() == sum(r.flops for r in report.rows), name
        assert report.total_params == sum(r.params for r in report.rows), name
        assert report.total_flops > 0


def test_inspect_leaves_model_and_rng_untouched():
    model = build_model(ModelConfig(name="resnet18"), (1, 28, 28), 10)
    model.train()
    model.encoder.bn1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    inspect_model(model, (1, 28, 28))
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training and not model.encoder.bn1.training and model.encoder.layer1.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval mode: running stats unchanged
    assert not model._forward_hooks and not model.encoder.conv1._forward_pre_hooks


def test_format_report_table():
    model = build_model(ModelConfig(name="simple-cnn"), (3, 32, 32), 10)
    text = format_report(inspect_model(model, (3, 32, 32)))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    for col in ("type", "output shape", "params", "FLOPs"):
        assert col in header
    conv1 = next(line for line in lines if line.startswith("encoder.conv1 "))
    assert "Conv2d" in conv1 and "[1, 6, 28, 28]" in conv1 and "456" in conv1 and "705.60K" in conv1
    assert "62,006 (62.01K)" in text
    assert "1,303,440 (1.30 MFLOPs)" in text
    assert "FlopCounterMode" in text and "multiply-accumulate" in text

    big = format_report(inspect_model(build_model(ModelConfig(name="resnet18"), (3, 32, 32), 10), (3, 32, 32)))
    assert "11,173,962 (11.17M)" in big and "(1.11 GFLOPs)" in big


def test_batchnorm_helpers():
    cnn = build_model(ModelConfig(name="simple-cnn"), (3, 32, 32), 10)
    assert not has_batchnorm(cnn)
    assert bn_state_keys(cnn) == []

    net = build_model(ModelConfig(name="resnet18", projection_head=True), (3, 32, 32), 10)
    assert has_batchnorm(net)
    keys = bn_state_keys(net)
    bn_modules = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn_modules) == 20
    suffixes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert sorted(keys) == sorted(f"{n}.{s}" for n in bn_modules for s in suffixes)
    assert "encoder.bn1.running_mean" in keys and "encoder.layer2.0.downsample.1.weight" in keys
    state = net.state_dict()
    assert [k for k in state if k in set(keys)] == keys  # state_dict order
    assert not any(k.startswith(("projection.", "classifier.")) or ".conv" in k for k in keys)
    assert state["encoder.bn1.num_batches_tracked"].dtype == torch.int64
