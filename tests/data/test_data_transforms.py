"""Batch transforms: to_float, augment_batch, add_feature_noise."""

from __future__ import annotations

import pytest
import torch

from fedsim.data.transforms import PAD, add_feature_noise, augment_batch, to_float


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ------------------------------------------------------------------------ to_float


def test_to_float_matches_hand_computation():
    x = torch.tensor([[[[0, 255], [51, 102]], [[10, 20], [30, 40]]]], dtype=torch.uint8)  # (1, 2, 2, 2)
    mean, std = (0.5, 0.25), (0.2, 0.5)
    out = to_float(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == x.shape
    for c in range(2):
        for h in range(2):
            for w in range(2):
                expected = (int(x[0, c, h, w]) / 255.0 - mean[c]) / std[c]
                assert out[0, c, h, w].item() == pytest.approx(expected, abs=1e-6)
    assert out[0, 0, 0, 1].item() == pytest.approx((1.0 - 0.5) / 0.2)


def test_to_float_without_stats_scales_to_unit_range():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(to_float(x, None, None), torch.tensor([0.0, 0.2, 1.0]).view(1, 1, 1, 3))


def test_to_float_passes_tabular_features_through():
    x = torch.randn(4, 60)
    assert to_float(x, None, None) is x


def test_to_float_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="C = len"):
        to_float(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (0.5,), (0.5,))


# -------------------------------------------------------------------- augment_batch


def ramps(b: int, c: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Every pixel of a sample distinct and nonzero; samples distinct from each other."""
    base = torch.arange(1, c * h * w + 1, dtype=torch.float64).view(1, c, h, w)
    x = base + 1000.0 * torch.arange(b, dtype=torch.float64).view(b, 1, 1, 1)
    if dtype == torch.uint8:
        x = base.expand(b, c, h, w) % 251 + 1  # still distinct within a sample when c*h*w <= 250
    return x.to(dtype)


def shifted(x: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """out[i, j] = x[i + dy, j + dx] (zero outside), then optionally mirrored left-right."""
    c, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = x[:, si, sj]
    return out.flip(-1) if flip else out


def explain(src: torch.Tensor, out: torch.Tensor) -> tuple[int, int, bool] | None:
    for dy in range(-PAD, PAD + 1):
        for dx in range(-PAD, PAD + 1):
            for flip in (False, True):
                if torch.equal(shifted(src, dy, dx, flip), out):
                    return dy, dx, flip
    return None


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_augment_each_sample_is_a_shifted_possibly_flipped_copy(dtype):
    x = ramps(24, 2, 8, 8, dtype)
    out = augment_batch(x, gen(3))
    assert out.shape == x.shape and out.dtype == dtype
    found = [explain(x[i], out[i]) for i in range(len(x))]
    assert all(f is not None for f in found), "some sample is not a shift (<= 4 px, zero-filled) + flip of its input"
    # the draws actually vary: both flips and several offsets appear in 24 samples
    assert {f[2] for f in found} == {False, True}
    assert len({(f[0], f[1]) for f in found}) > 5


def test_augment_is_deterministic_per_generator_and_varies_with_seed():
    x = ramps(32, 3, 10, 10)
    a = augment_batch(x, gen(7))
    b = augment_batch(x, gen(7))
    c = augment_batch(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(x, ramps(32, 3, 10, 10)), "input must not be modified"


def test_augment_draws_cover_the_range_uniformly():
    # one pixel marks the position: after the crop it sits at (4 - dy, 4 - dx) or mirrored
    n = 4000
    x = torch.zeros(n, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    out = augment_batch(x, gen(0))
    kept = out.flatten(1).sum(1)
    assert torch.all(kept == 1.0)  # the centre pixel survives every shift of <= 4
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    counts = torch.bincount(rows, minlength=9).float()
    assert torch.all(counts > 0.8 * n / 9) and torch.all(counts < 1.2 * n / 9)
    counts = torch.bincount(cols, minlength=9).float()
    assert torch.all(counts > 0.8 * n / 9) and torch.all(counts < 1.2 * n / 9)


def test_augment_flip_probability_is_one_half():
    n = 4000
    x = torch.zeros(n, 1, 12, 40)
    x[:, :, :, :20] = 1.0  # left half bright; a shift moves the edge by at most 4 px
    out = augment_batch(x, gen(1))
    flipped = (out[:, 0, 6, 30:].sum(1) > 0).float().mean().item()
    assert abs(flipped - 0.5) < 0.04


def test_augment_empty_batch_and_bad_shape():
    x = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    assert augment_batch(x, gen()).shape == x.shape
    with pytest.raises(ValueError):
        augment_batch(torch.zeros(3, 8, 8), gen())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augment_on_cuda_matches_cpu_with_a_cpu_generator():
    x = ramps(16, 3, 12, 12, torch.uint8)
    cpu = augment_batch(x, gen(5))
    dev = augment_batch(x.cuda(), gen(5))  # draws on the CPU generator, moved to the GPU
    assert dev.device.type == "cuda" and torch.equal(dev.cpu(), cpu)
    on_gpu = augment_batch(x.cuda(), gen(5, "cuda"))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == x.shape
    assert all(explain(x[i].float(), on_gpu[i].cpu().float()) is not None for i in range(len(x)))
    noisy = add_feature_noise(torch.zeros(10000, device="cuda"), 0.5, gen(0, "cuda"))
    assert abs(noisy.std().item() - 0.5) < 0.03


# ---------------------------------------------------------------- add_feature_noise


def test_feature_noise_zero_sigma_is_a_no_op():
    x = torch.randn(5, 4)
    assert add_feature_noise(x, 0.0, gen()) is x


def test_feature_noise_has_the_requested_std_and_is_deterministic():
    x = torch.full((200_000,), 3.0)
    a = add_feature_noise(x, 0.5, gen(11))
    b = add_feature_noise(x, 0.5, gen(11))
    assert torch.equal(a, b)
    d = a - x
    assert abs(d.std().item() - 0.5) < 0.005
    assert abs(d.mean().item()) < 0.005
    assert torch.equal(x, torch.full((200_000,), 3.0)), "input must not be modified"


def test_feature_noise_refuses_uint8():
    with pytest.raises(TypeError, match="to_float"):
        add_feature_noise(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 0.1, gen())


def test_to_float_passes_tokens_through():
    tokens = torch.tensor([[3, 79, 0]], dtype=torch.int64)
    assert to_float(tokens, None, None) is tokens
