"""Registry, feature-noise levels, plot, and the package's import hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import partitioners
from partitioners import registry


def test_available_and_params():
    assert set(partitioners.available()) == {
        "iid",
        "dirichlet",
        "label-quantity",
        "shards",
        "quantity-skew",
        "natural",
        "flwr",
    }
    assert partitioners.scheme_params("dirichlet") == ["beta", "min_size", "max_redraws"]
    assert partitioners.scheme_params("quantity-skew") == ["beta", "min_size", "max_redraws"]
    assert partitioners.scheme_params("label-quantity") == ["classes_per_party"]
    assert partitioners.scheme_params("shards") == ["shards_per_party"]
    assert partitioners.scheme_params("natural") == ["groups"]
    assert partitioners.scheme_params("iid") == []
    # the seed reaches flwr as seed=, not as a parameter
    assert partitioners.scheme_params("flwr") == ["flwr_partitioner", "flwr_args", "groups"]
    assert partitioners.registry.takes_seed("flwr") and not partitioners.registry.takes_seed("dirichlet")


@pytest.fixture()
def scratch_scheme():
    names = []
    yield names
    for n in names:
        registry.unregister(n)


def test_register_a_scheme(scratch_scheme):
    scratch_scheme.append("reverse-halves")

    @partitioners.register("reverse-halves")
    def reverse_halves(labels, n_parties, rng, *, flip: bool = True):
        idx = np.arange(labels.size)[::-1] if flip else np.arange(labels.size)
        return {j: list(part) for j, part in enumerate(np.array_split(idx, n_parties))}

    assert "reverse-halves" in partitioners.available()
    assert partitioners.scheme_params("reverse-halves") == ["flip"]
    d = partitioners.partition(np.zeros(10, dtype=int), "reverse-halves", 2)
    assert d[0].dtype == np.int64 and d[0].tolist() == [5, 6, 7, 8, 9]  # converted and sorted
    with pytest.raises(TypeError):
        partitioners.register("bad")(lambda x, y: {})


def test_noise_levels():
    lv = partitioners.noise_levels(2.0, 5)
    assert lv.dtype == np.float64 and lv.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert partitioners.noise_levels(0.3, 1).tolist() == [0.3]
    assert partitioners.noise_levels(0.0, 3).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("n_parties,n_classes", [(10, 10), (1000, 10), (8, 100)])
def test_plot_writes_png(tmp_path, n_parties, n_classes):
    counts = np.random.default_rng(0).integers(0, 50, (n_parties, n_classes))
    counts[0] = 0  # an empty party must not break the proportions
    path = tmp_path / "labels.png"
    partitioners.plot_label_distribution(counts.tolist(), path, title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_import_pulls_no_heavy_modules():
    code = (
        "import sys, partitioners; "
        "bad = [m for m in ('fedsim', 'torch', 'flwr', 'matplotlib', 'datasets', 'flwr_datasets') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr_datasets.partitioner", None)
    with pytest.raises(ValueError, match=r"pip install 'fedsim\[hf\]'") as info:
        partitioners.partition(
            np.arange(100) % 10, "flwr", 5, flwr_partitioner="DirichletPartitioner", flwr_args={"alpha": 1}
        )
    assert isinstance(info.value, ImportError)
