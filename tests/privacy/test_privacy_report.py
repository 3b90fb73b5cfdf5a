"""A sweep over privacy.noise_multiplier gives the privacy-utility table and figure."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("dp_accounting", reason="pip install 'fedsim[privacy]'")

import fedsim  # noqa: E402
from fedsim.report import report  # noqa: E402
from fedsim.report.load import load_sweep  # noqa: E402
from fedsim.report.privacy import privacy_figure, privacy_points  # noqa: E402


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("sweep") / "s"
    fedsim.sweep(
        {
            "base": tiny(federation={"rounds": 1}),
            "grid": {
                "privacy": [
                    {"label": "none", "mode": "none"},
                    {"label": "s0.5", "mode": "central-fixed", "noise_multiplier": 0.5},
                    {"label": "s2", "mode": "central-fixed", "noise_multiplier": 2.0},
                ]
            },
            "seeds": [0],
        },
        out=out,
    )
    return out


def test_the_table_and_figure_show_accuracy_against_epsilon(sweep_dir):
    summaries = {
        p.name: json.loads((p / "summary.json").read_text())
        for p in sweep_dir.iterdir()
        if (p / "summary.json").exists()
    }
    by_sigma = {s.get("noise_multiplier") if s.get("privacy_mode") else None: s for s in summaries.values()}
    points = privacy_points(load_sweep(sweep_dir))
    assert [p["mode"] for p in points] == ["none", "central-fixed", "central-fixed"]
    assert points[0]["epsilon"] == math.inf
    assert [p["sigma"] for p in points[1:]] == [2.0, 0.5]
    for p in points[1:]:
        s = by_sigma[p["sigma"]]
        assert p["epsilon"] == pytest.approx(s["epsilon"]) and p["accuracy"] == pytest.approx(100 * s["test_accuracy"])
    assert points[1]["epsilon"] < points[2]["epsilon"]  # more noise, less epsilon
    fig = privacy_figure(load_sweep(sweep_dir))
    ax = fig.axes[0]
    line = next(ln for ln in ax.get_lines() if "central-fixed" in ln.get_label())
    assert sorted(line.get_xdata()) == pytest.approx(sorted(p["epsilon"] for p in points[1:]))
    ref = next(ln for ln in ax.get_lines() if "no DP" in ln.get_label())
    assert ref.get_ydata()[0] == pytest.approx(points[0]["accuracy"])
    # each point says which noise gave it; the axis reads in plain numbers; every label inside the figure
    assert sorted(t.get_text() for t in ax.texts) == ["σ=0.5", "σ=2"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and not any("times" in t or "^" in t for t in ticks)
    for text in (ax.xaxis.label, ax.yaxis.label, fig.legends[0].get_texts()[0]):
        ext = text.get_window_extent(renderer)
        assert fig.bbox.y0 <= ext.y0 and ext.x1 <= fig.bbox.x1, text.get_text()
    md = report(sweep_dir).read_text()
    assert "## Privacy against utility" in md and "privacy_utility.png" in md
    assert f"{points[1]['epsilon']:.2f}" in md
    assert (sweep_dir / "figures" / "privacy_utility.png").stat().st_size > 0
