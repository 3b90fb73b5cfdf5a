"""GPU paths. Marked `gpu` and skipped without CUDA; the CPU halves run everywhere."""

import pytest
import torch

import fedsim

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_oom_in_one_client_is_a_recorded_failure(tmp_path, tiny, monkeypatch):
    """An out-of-memory error in one client fails that client, with a hint, not the run."""
    import fedsim.client.app as client

    real = client.train_local

    def flaky(model, rule, data, *args, **kwargs):
        if rule.ctx.party == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, rule, data, *args, **kwargs)

    monkeypatch.setattr(client, "train_local", flaky)
    r = fedsim.run(tiny(federation={"rounds": 1}), out=tmp_path / "r")
    failures = r.history[0]["failures"]
    assert [f["party"] for f in failures] == [1]
    assert "CUDA out of memory in party 1" in failures[0]["reason"] and "train.batch_size" in failures[0]["reason"]
    assert r.history[0]["clients"] == 3


@pytest.mark.gpu
@cuda
def test_gpu_run_places_model_and_data_on_cuda(tmp_path, tiny):
    from fedsim.client.app import runtime_for
    from fedsim.config.load import load_config
    from fedsim.inputs.run_inputs import RunSettings

    cfg = tiny(engine={"device": "cuda"}, train={"amp": True})
    r = fedsim.run(cfg, out=tmp_path / "r")
    rt = runtime_for(RunSettings(load_config(cfg), str((tmp_path / "r").resolve())))
    assert rt.device.type == "cuda" and rt.x.is_cuda and next(rt.model.parameters()).is_cuda
    assert r.summary["test_accuracy"] > 0.4


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_batched_clients_on_cuda_equal_sequential(tmp_path, tiny, name):
    runs = {}
    for mode in ("off", "auto"):
        cfg = tiny(
            engine={"device": "cuda", "batch_clients": mode, "deterministic": True},
            strategy={"name": name, **({"mu": 0.1} if name == "fedprox" else {})},
        )
        res = fedsim.run(cfg, out=tmp_path / mode)
        runs[mode] = torch.load(res.run_dir / "model.pt", weights_only=True)
    for k in runs["off"]:
        torch.testing.assert_close(runs["auto"][k], runs["off"][k], rtol=0, atol=1e-4)


@pytest.mark.gpu
@cuda
def test_deterministic_mode_repeats_on_gpu(tmp_path, tiny):
    cfg = tiny(
        engine={"device": "cuda", "deterministic": True, "batch_clients": "off"},
        model={"name": "resnet18"},
        data={"image_shape": [3, 16, 16]},
        federation={"rounds": 1},
    )
    a = fedsim.run(cfg, out=tmp_path / "a")
    b = fedsim.run(cfg, out=tmp_path / "b")
    assert (a.run_dir / "model.pt").read_bytes() == (b.run_dir / "model.pt").read_bytes()
