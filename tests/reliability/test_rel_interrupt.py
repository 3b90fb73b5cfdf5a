"""An interrupted run names its directory, and ``--resume`` without ``--out`` continues
the newest unfinished run of the config or refuses: it never starts over."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

import fedsim
import fedsim.api as api
from fedsim.cli import main
from fedsim.server.app import RunHooks


def _cfg_file(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def _ctrl_c_after_round(monkeypatch, k: int) -> None:
    """The engine's run stops as Ctrl-C stops it, after round ``k`` is recorded and checkpointed."""
    real = api.get_engine

    def engine(name):
        run = real(name)

        def interrupted(settings, hooks):
            def on_round(row):
                if hooks is not None and hooks.on_round is not None:
                    hooks.on_round(row)
                if row["round"] == k:
                    raise KeyboardInterrupt

            return run(settings, RunHooks(hooks.on_open, hooks.on_start, on_round))

        return interrupted

    monkeypatch.setattr(api, "get_engine", engine)


def _runs(root: Path) -> set[str]:
    return {p.name for p in (root / "runs").iterdir()}


def test_ctrl_c_names_the_run_directory_and_resume_without_out_continues_it(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny(federation={"rounds": 3})
    path = _cfg_file(tmp_path, cfg)
    prefix = "synthetic-images-dirichlet-fedavg-s0"
    # an older finished run of the same config (the reference) and the newest-named run of another config
    ref = fedsim.run(cfg, out=f"runs/{prefix}-20000101-000000").run_dir
    _ctrl_c_after_round(monkeypatch, 1)
    assert main(["run", path, "--quiet"]) == 130
    (name,) = _runs(tmp_path) - {ref.name}
    # the interrupt line is the command that continues this run, its directory named
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fedsim: interrupted; continue with: fedsim run {path} --out runs/{name} --resume --quiet"]
    other = tmp_path / "runs" / f"{prefix}-29990101-000000"
    shutil.copytree(tmp_path / "runs" / name, other)
    saved = yaml.safe_load((other / "config.yaml").read_text())
    saved["train"]["lr"] = 0.2
    (other / "config.yaml").write_text(yaml.safe_dump(saved))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    before = _runs(tmp_path)
    assert main(["run", path, "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"--resume: continuing the newest unfinished run of this config, runs/{name}" in out
    assert "resuming from round 1 of 3" in out
    assert _runs(tmp_path) == before  # nothing new started
    assert _same_weights(tmp_path / "runs" / name, ref)
    assert not (other / "summary.json").exists()  # another config's run is not this one's


def test_resume_without_out_refuses_when_nothing_is_unfinished_and_extends_a_raised_run(
    tmp_path, tiny, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = _cfg_file(tmp_path, tiny(federation={"rounds": 1}))
    assert main(["run", path, "--resume", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "fedsim: error: --resume without --out: no unfinished run of this config in 'runs' "
        "(named synthetic-images-dirichlet-fedavg-s0-<time>); give the run directory with --out, "
        "or leave out --resume to start a new run"
    )
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    # with --overwrite as well, fedsim would pick a directory to delete: refused, whatever --out
    assert main(["run", path, "--resume", "--overwrite", "--quiet"]) == 2
    assert "--resume and --overwrite contradict each other" in capsys.readouterr().err
    done = fedsim.run(path).run_dir
    capsys.readouterr()
    assert main(["run", path, "--resume", "--quiet"]) == 2
    assert f"its newest ended run is '{done}'" in capsys.readouterr().err
    assert _runs(tmp_path) == {done.name}
    # federation.rounds raised: that finished run has more to do, and is the one continued
    assert main(["run", path, "federation.rounds=2", "--resume", "--quiet"]) == 0
    assert "resuming from round 1 of 2" in capsys.readouterr().out
    assert fedsim.api.load_result(done).summary["rounds"] == 2 and _runs(tmp_path) == {done.name}
