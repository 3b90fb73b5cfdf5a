"""Batched client execution (torch.func.vmap) against the sequential engine, on CPU."""

import logging

import pytest
import torch

import fedsim
from fedsim.engine.batched import why_not_batched


def _run(tiny, tmp_path, mode, name="fedavg", **over):
    sections = dict(
        strategy={"name": name, **({"mu": 0.5} if name == "fedprox" else {})},
        # ranges of epochs and stragglers: clients finish at different steps (masking)
        train={"epochs": [1, 2], "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        federation={"rounds": 2, "straggler_fraction": 0.3},
        engine={"batch_clients": mode},
    )
    for k, v in over.items():
        sections.setdefault(k, {}).update(v)
    r = fedsim.run(tiny(**sections), out=tmp_path / mode)
    return torch.load(r.run_dir / "model.pt", weights_only=True), r.history


@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
@pytest.mark.parametrize("data", [{}, {"augment": True, "feature_noise": 0.2}], ids=["plain", "augmented"])
def test_batched_updates_equal_sequential(tmp_path, tiny, name, data):
    seq_w, seq_h = _run(tiny, tmp_path, "off", name, data=data)
    bat_w, bat_h = _run(tiny, tmp_path, "on", name, data=data)
    for k in seq_w:
        torch.testing.assert_close(bat_w[k], seq_w[k], rtol=0, atol=1e-5)
    for a, b in zip(seq_h, bat_h):
        assert a["clients"] == b["clients"] and a["local_steps_mean"] == b["local_steps_mean"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


@pytest.mark.parametrize(
    "over, fragment",
    [
        ({"strategy": {"name": "scaffold"}}, "gradient hooks"),
        ({"train": {"optimizer": "adam"}}, "SGD only"),
        ({"model": {"dropout": 0.2}}, "dropout"),
        (
            {
                "model": {"name": "resnet18"},
                "data": {"image_shape": [3, 8, 8], "n_train": 80, "n_test": 20},
                "partition": {"min_size": 5},
                "eval": {"train_sample": 0},
            },
            "BatchNorm",
        ),
    ],
)
def test_falls_back_with_a_logged_reason(tmp_path, tiny, caplog, over, fragment):
    cfg = tiny(engine={"batch_clients": "on"}, federation={"rounds": 1})
    for k, v in over.items():
        cfg.setdefault(k, {}).update(v)
    with caplog.at_level(logging.WARNING, logger="fedsim.engine.batched"):
        r = fedsim.run(cfg, out=tmp_path / "r")
    assert r.summary["rounds"] == 1
    assert any("one at a time" in m and fragment in m for m in caplog.messages), caplog.messages


def test_auto_batches_on_cuda_only(tmp_path, tiny):
    from fedsim.client.app import runtime_for
    from fedsim.config.load import load_config
    from fedsim.inputs.run_inputs import RunSettings
    from fedsim.prepare.preflight import prepare_run_dir
    from fedsim.rundir.store import RunStore

    cfg = load_config(tiny())
    prepare_run_dir(cfg, RunStore(tmp_path))
    rt = runtime_for(RunSettings(cfg, str(tmp_path)))
    reason = why_not_batched(rt, "auto")
    if rt.device.type == "cuda":
        assert reason is None
    else:
        assert "CUDA only" in reason
    assert why_not_batched(rt, "on") is None


def test_groupnorm_resnet_trains_batched_with_the_sequential_weights(tmp_path, tiny, caplog):
    """ResNet-18 with GroupNorm (``model.norm: group``) has no running statistics, so
    its cohort trains in lockstep; the weights equal the one-at-a-time engine's."""
    over = dict(
        model={"name": "resnet18", "norm": "group"},
        data={"image_shape": [3, 8, 8], "n_train": 48, "n_test": 16},
        partition={"min_size": 4},
        eval={"train_sample": 0},
        train={"epochs": 1, "batch_size": 8},
        federation={"rounds": 1, "straggler_fraction": 0.0},
    )
    seq_w, _ = _run(tiny, tmp_path, "off", **over)
    with caplog.at_level(logging.INFO, logger="fedsim.engine.batched"):
        bat_w, _ = _run(tiny, tmp_path, "on", **over)
    assert "one at a time" not in caplog.text
    assert any(isinstance(k, str) and k.endswith("bn1.weight") for k in bat_w)  # GroupNorm keeps torchvision's names
    for k in seq_w:
        torch.testing.assert_close(bat_w[k], seq_w[k], rtol=0, atol=1e-5)
