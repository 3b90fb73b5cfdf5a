"""The same run on every engine: local (1 or 2 workers), Flower's Ray runtime, flwr run."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from flower_watch import watching_flower
from flwr.app import Context, RecordDict
from torch import nn

import fedsim
from fedsim.client.app import load_targets

ROOT = Path(__file__).resolve().parents[2]


def _weights(run_dir):
    return torch.load(Path(run_dir) / "model.pt", weights_only=True)


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _cfg(tiny, **engine):
    # fraction_fit < 1 so that sampling (by partition id, not node id) is exercised
    return tiny(federation={"rounds": 2, "fraction_fit": 0.75}, engine=engine)


@pytest.mark.ray
def test_local_and_ray_give_the_same_run_under_default_settings(tmp_path, tiny, flower_deprecations):
    # what a user's process has: torch's default thread count, not the suite's one
    # thread; engine.threads (default 1) must make the local clients match Ray's actors
    torch.set_num_threads(os.cpu_count() or 2)
    assert fedsim.load_config(_cfg(tiny)).engine.threads == 1
    local = fedsim.run(_cfg(tiny), out=tmp_path / "local")
    # Flower's Ray runtime through no deprecated API, its warnings shown (flower_watch.py)
    with watching_flower() as watch:
        ray_run = fedsim.run(_cfg(tiny, name="ray"), out=tmp_path / "ray", hooks=watch.hooks)
    watch.check(rounds=2)
    assert [r.getMessage() for r in flower_deprecations] == []
    a, b = _weights(local.run_dir), _weights(ray_run.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    for ra, rb in zip(_metrics(local.run_dir), _metrics(ray_run.run_dir)):
        assert (
            ra["clients"] == rb["clients"] and ra["bytes_up"] == rb["bytes_up"] and ra["bytes_down"] == rb["bytes_down"]
        )
        for key in ("test_accuracy", "test_loss", "train_loss", "test_f1_macro"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-5), key
    ca = sorted(
        (c["round"], c["party"]) for c in map(json.loads, (local.run_dir / "clients.jsonl").read_text().splitlines())
    )
    cb = sorted(
        (c["round"], c["party"]) for c in map(json.loads, (ray_run.run_dir / "clients.jsonl").read_text().splitlines())
    )
    assert ca == cb  # the same parties were sampled on both engines


def test_two_workers_equal_one(tmp_path, tiny):
    one = fedsim.run(_cfg(tiny), out=tmp_path / "one")
    two = fedsim.run(_cfg(tiny, workers=2), out=tmp_path / "two")
    a, b = _weights(one.run_dir), _weights(two.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)

    def strip(rows):
        return [{k: v for k, v in r.items() if "time" not in k} for r in rows]

    assert strip(_metrics(one.run_dir)) == strip(_metrics(two.run_dir))


def test_the_flwr_run_apps_read_the_pyproject_run_config(tmp_path, tiny):
    """`flwr run .` loads the apps pyproject.toml names ([tool.flwr.app.components]), which
    read [tool.flwr.app.config]; here they run on the local Grid with such a config."""
    import importlib
    import tomllib

    from fedsim.engine.executors import SequentialExecutor
    from fedsim.engine.local import LocalGrid
    from fedsim.util.flower_compat import set_task_identity

    root = Path(__file__).resolve().parents[2]
    components = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    server_app, client_app = (
        getattr(importlib.import_module(ref.split(":")[0]), ref.split(":")[1])
        for ref in (components["serverapp"], components["clientapp"])
    )

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny()))
    run_config = {
        "config": str(cfg_path),
        "overrides": "federation.rounds=1 seed=3",
        "run-dir": str(tmp_path / "out"),
        "resume": False,
    }
    set_task_identity(7)
    grid = LocalGrid(SequentialExecutor(client_app), 4, run_config, run_id=7)
    server_app(grid, Context(run_id=7, node_id=1, node_config={}, state=RecordDict(), run_config=run_config))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["seed"] == 3
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["seed"] == 3


@pytest.mark.slow
def test_flwr_run_dot(tmp_path):
    """The real thing: Flower's CLI starts a local SuperLink and runs the app."""
    env = dict(
        os.environ,
        FLWR_HOME=str(tmp_path / "flwr-home"),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT="39191",
        FLWR_LOCAL_CONTROL_API_PORT="39193",
    )
    out = tmp_path / "out"
    cmd = [
        shutil.which("flwr") or "flwr",
        "run",
        str(ROOT),
        "--stream",
        "--run-config",
        f'overrides="federation.rounds=1 data.n_train=500 data.n_test=100" run-dir="{out}"',
        "--federation-config",
        "num-supernodes=10",
    ]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert (out / "summary.json").exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
        assert json.loads((out / "summary.json").read_text())["rounds"] == 1
    finally:
        subprocess.run(["pkill", "-f", f"--log-file {tmp_path}"], check=False)


def test_load_targets_are_the_tensors_load_state_dict_fills_or_none():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    state = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    targets = load_targets(model, state)
    assert targets is not None and [t.data_ptr() for t in targets] == [
        t.data_ptr() for t in model.state_dict().values()
    ]
    assert load_targets(model, dict(reversed(list(state.items())))) is None  # another key order

    class OwnLoad(nn.Linear):
        def _load_from_state_dict(self, *args, **kwargs):
            super()._load_from_state_dict(*args, **kwargs)

    assert load_targets(nn.Sequential(OwnLoad(3, 2)), nn.Sequential(nn.Linear(3, 2)).state_dict()) is None
    hooked = nn.Linear(3, 2)
    hooked.register_load_state_dict_post_hook(lambda module, keys: None)
    assert load_targets(hooked, hooked.state_dict()) is None


def test_a_cohort_goes_to_the_workers_in_contiguous_slices_of_near_equal_size():
    from fedsim.engine.workers import chunks

    # two workers, four slices each: bounds floor(i x 100 / 8)
    bounds = [0, 12, 25, 37, 50, 62, 75, 87, 100]
    assert chunks(100, 2) == [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    assert [s.stop - s.start for s in chunks(10, 2)] == [1, 1, 1, 2, 1, 1, 1, 2]  # floor(i x 10 / 8)
    assert chunks(3, 2) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # fewer jobs than slices: one each
    assert chunks(1, 4) == [slice(0, 1)]
    assert chunks(0, 2) == []
    for n in (1, 7, 64, 1000):  # every job once, in order
        assert [i for s in chunks(n, 3) for i in range(s.start, s.stop)] == list(range(n))


def test_the_main_process_takes_the_share_that_keeps_it_as_busy_as_a_worker():
    from fedsim.engine.workers import ShareClock

    clock = ShareClock(trainers=2)
    assert clock.local_count(10) == 5  # before any timing: K / N
    clock.trained(main=(5, 0.001), pool=(5, 2.0), pool_size=1)  # the first cohort: workers start
    assert clock.local_count(10) == 5
    # the main process 2 ms a client, a worker 3 ms: m 2 = (10 - m) 3 -> m = 6
    clock.trained(main=(5, 0.010), pool=(5, 0.015), pool_size=1)
    assert clock.local_count(10) == 6
    clock.trained(main=(6, 0.006), pool=(4, 4.0), pool_size=1)  # a slow pool keeps one client
    assert clock.local_count(10) == 9 and clock.local_count(1) == 1
    three = ShareClock(trainers=3, cohorts=1)  # two workers sharing 8 clients in 12 ms: 3 ms a client each
    three.trained(main=(4, 0.008), pool=(8, 0.012), pool_size=2)
    assert three.local_count(16) == round(16 * 1.5 / (2 + 1.5))  # m 2 = (16 - m) 3 / 2
