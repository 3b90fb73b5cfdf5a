"""Nothing lost: run directories are owned (marker, lock), checkpoints verified, records
rebuilt, partitions checked, workers die with their parent, and every failure is one
line with exit 2. Each test pins a finding that lost or corrupted a user's files."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fedsim
import partitioners
from fedsim.cli import main
from fedsim.errors import RunAborted, RunDirError

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")


def _rows(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)}
        for line in path.read_text().splitlines()
    ]


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def _cfg_file(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _wait_for_rows(path: Path, k: int, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= k:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {k} rows")


# -------------------------------------------------------------------------- ownership


def test_a_second_process_is_refused_while_a_run_holds_the_directory_and_a_kill_frees_it(tmp_path, tiny):
    cfg = tiny(federation={"rounds": 6}, data={"n_train": 1200})
    path = _cfg_file(tmp_path, cfg)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", path, "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        _wait_for_rows(out / "metrics.jsonl", 1, proc)
        with pytest.raises(RunDirError, match=rf"in use by process {proc.pid}"):
            fedsim.run(cfg, out=out, resume=True)
        proc.kill()  # kill -9: the kernel releases the lock
        proc.wait()
        done = fedsim.run(cfg, out=out, resume=True)
        assert [r["round"] for r in done.history] == list(range(1, 7))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_overwrite_removes_only_what_fedsim_wrote(tmp_path, tiny, capsys):
    cfg = tiny(federation={"rounds": 1})
    path = _cfg_file(tmp_path, cfg)
    project = tmp_path / "project"
    (project / "notes").mkdir(parents=True)
    (project / "notes" / "idea.md").write_text("precious")
    (project / "results_2024.csv").write_text("a,b\n")
    assert main(["run", path, "--out", str(project), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a fedsim run directory" in err[0]
    assert (project / "notes" / "idea.md").read_text() == "precious" and (project / "results_2024.csv").exists()
    assert not (project / ".fedsim").exists() and not (project / ".fedsim.lock").exists()

    run = tmp_path / "run"
    fedsim.run(cfg, out=run)
    (run / "my_analysis.ipynb").write_text("{}")  # the user's file inside a run directory
    assert main(["run", path, "--out", str(run), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds 'my_analysis.ipynb', which fedsim did not write" in err
    assert (run / "my_analysis.ipynb").exists() and (run / "summary.json").exists()
    (run / "my_analysis.ipynb").unlink()
    before = (run / "summary.json").stat().st_mtime_ns
    assert main(["run", path, "--out", str(run), "--overwrite", "--quiet"]) == 0
    assert (run / "summary.json").stat().st_mtime_ns != before


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, tiny, capsys):
    path = _cfg_file(tmp_path, tiny(federation={"rounds": 1}))
    foreign = tmp_path / "foreign"
    (foreign / "client_state").mkdir(parents=True)
    (foreign / "client_state" / "important.txt").write_text("precious")
    (foreign / "plots").mkdir()
    (foreign / "plots" / "accuracy.png").write_bytes(b"my figure")
    (foreign / "metrics.jsonl").write_text('{"mine": 1}\n')
    snapshot = {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()}
    assert main(["run", path, "--out", str(foreign), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a fedsim run directory" in err[0]
    assert {p: p.read_bytes() for p in foreign.rglob("*") if p.is_file()} == snapshot


# ------------------------------------------------------------------------ checkpoints


def _interrupted(tmp_path: Path, tiny, rounds: int = 3) -> tuple[dict, Path, Path]:
    """A finished reference run, and a copy with its last round undone (as a kill would)."""
    cfg = tiny(federation={"rounds": rounds}, output={"keep_checkpoints": 3, "plots": False})
    ref = fedsim.run(cfg, out=tmp_path / "ref").run_dir
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "summary.json").unlink()
    (run / "model.pt").unlink()
    shutil.rmtree(run / "checkpoints" / f"round_{rounds:06d}")
    return cfg, ref, run


def test_a_run_an_older_fedsim_started_resumes_after_an_upgrade(tmp_path, tiny, monkeypatch):
    """A run started before fedsim had ``model.norm`` (its config.yaml and checkpoint
    hashes lack the key) resumes exactly after the upgrade, and its config.yaml keeps
    only its own keys (the new one is at its default)."""
    import fedsim.prepare.preflight as preflight_mod
    import fedsim.schema.identity as config_mod

    new = ("model.norm", "model.norm_groups")
    with monkeypatch.context() as m:  # "the older fedsim": no such keys anywhere
        identity = config_mod.identity
        m.setattr(config_mod, "identity", lambda cfg: {k: v for k, v in identity(cfg).items() if k not in new})
        to_yaml = config_mod.to_yaml

        def old_yaml(cfg):
            tree = yaml.safe_load(to_yaml(cfg))
            for key in ("norm", "norm_groups"):
                tree["model"].pop(key)
            return yaml.safe_dump(tree)

        m.setattr(preflight_mod, "to_yaml", old_yaml)
        cfg, ref, run = _interrupted(tmp_path, tiny)
    assert "norm" not in yaml.safe_load((run / "config.yaml").read_text())["model"]
    done = fedsim.run(cfg, out=run, resume=True)
    assert done.summary["status"] == "finished"
    assert (run / "model.pt").read_bytes() == (ref / "model.pt").read_bytes()
    assert "norm" not in yaml.safe_load((run / "config.yaml").read_text())["model"]
    # and the checkpoint it wrote after the upgrade resumes too (same keys, same hash)
    shutil.rmtree(run / "checkpoints" / "round_000003")
    (run / "summary.json").unlink()
    assert fedsim.run(cfg, out=run, resume=True).summary["status"] == "finished"


def test_a_bit_flipped_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny, caplog):
    cfg, ref, run = _interrupted(tmp_path, tiny)
    state = run / "checkpoints" / "round_000002" / "state.pt"
    data = bytearray(state.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    state.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="fedsim.rundir.checkpoint"):
        done = fedsim.run(cfg, out=run, resume=True)
    assert any("does not match its sha256" in m for m in caplog.messages)
    assert any("older checkpoint" in m and "round_000001" in m for m in caplog.messages)
    assert done.summary["rounds"] == 3 and _same_weights(run, ref)
    assert _rows(run / "metrics.jsonl") == _rows(ref / "metrics.jsonl")


@pytest.mark.parametrize("privacy", [{}, {"mode": "central-fixed"}], ids=["plain", "privacy"])
def test_falling_back_to_an_older_checkpoint_is_said_once(tmp_path, tiny, capsys, caplog, privacy):
    """The checks before a resume read the checkpoint too: the warning pair was printed
    three times (each check, then the resume)."""
    cfg = tiny(federation={"rounds": 3}, output={"keep_checkpoints": 3, "plots": False}, privacy=privacy)
    path = _cfg_file(tmp_path, cfg)
    run = tmp_path / "run"
    assert main(["run", path, "--out", str(run), "--quiet"]) == 0
    (run / "summary.json").unlink()
    state = run / "checkpoints" / "round_000003" / "state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="fedsim.rundir.checkpoint"):
        assert main(["run", path, "--out", str(run), "--resume", "--quiet"]) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "fedsim.rundir.checkpoint"]
    assert len(said) == 2, said
    assert "does not match its sha256; falling back to an older checkpoint" in said[0]
    assert "resuming from the older checkpoint" in said[1] and "round_000002" in said[1]


def test_a_truncated_checkpoint_falls_back_and_none_intact_is_one_line(tmp_path, tiny, capsys, caplog):
    cfg, ref, run = _interrupted(tmp_path, tiny)
    for d in (run / "checkpoints").glob("round_*"):
        state = d / "state.pt"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    path = _cfg_file(tmp_path, cfg)
    with caplog.at_level(logging.WARNING, logger="fedsim.rundir.checkpoint"):
        assert main(["run", path, "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint of" in err[0] and "is intact" in err[0]
    # no "falling back" warning either (the log goes to the real stderr, not capsys)
    assert not [r for r in caplog.records if r.name == "fedsim.rundir.checkpoint"]


def test_client_state_files_are_verified(tmp_path, tiny):
    cfg = tiny(strategy={"name": "scaffold"}, federation={"rounds": 1})
    res = fedsim.run(cfg, out=tmp_path / "r")
    party = next((res.run_dir / "client_state").glob("party_*.pt"))
    from fedsim.rundir.store import load_tensors

    assert load_tensors(party)
    data = bytearray(party.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 512] = bytes(b ^ 0xFF for b in data[mid : mid + 512])  # inside the tensor data
    party.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="corrupt|not a fedsim tensor file"):
        load_tensors(party)


# ---------------------------------------------------------------------------- records


def test_garbled_record_lines_lose_no_rows_on_resume(tmp_path, tiny, caplog):
    cfg, ref, run = _interrupted(tmp_path, tiny, rounds=4)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = "\x00\x13garbage{{{"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    clines = (run / "clients.jsonl").read_text().splitlines()
    garbled = clines[2]
    clines[2] = garbled[: len(garbled) // 2]
    (run / "clients.jsonl").write_text("\n".join(clines) + "\n")
    with caplog.at_level(logging.WARNING, logger="fedsim.rundir.store"):
        fedsim.run(cfg, out=run, resume=True)
    # metrics.jsonl is rebuilt from the checkpoint's history: every row is back
    assert _rows(run / "metrics.jsonl") == _rows(ref / "metrics.jsonl")
    # clients.jsonl keeps every readable line (all but the garbled one) and says so
    assert len(_rows(run / "clients.jsonl")) == len(_rows(ref / "clients.jsonl")) - 1
    assert any("clients.jsonl" in m and "unreadable line" in m for m in caplog.messages)
    assert any("metrics.jsonl" in m and "rebuilt from the checkpoint" in m for m in caplog.messages)
    assert _same_weights(run, ref)


def test_an_aborted_round_writes_its_failure_reasons(tmp_path, tiny):
    cfg = tiny(federation={"rounds": 2, "max_failure_fraction": 0.1}, engine={"fault_rate": 0.9})
    with pytest.raises(RunAborted):
        fedsim.run(cfg, out=tmp_path / "r")
    rows = _rows(tmp_path / "r" / "metrics.jsonl")
    assert rows and rows[-1]["aborted"] is True and rows[-1]["failures"]
    failed = [c for c in _rows(tmp_path / "r" / "clients.jsonl") if c["status"] == "failed"]
    assert {c["party"] for c in failed} == {f["party"] for f in rows[-1]["failures"]}
    assert all(c["reason"] for c in failed)


# ----------------------------------------------------------------------------- resume


def test_resume_checks_the_partition_file_against_the_config(tmp_path, tiny, capsys):
    cfg, ref, run = _interrupted(tmp_path, tiny)
    from fedsim.inputs.run_inputs import load_bundle

    y = load_bundle(fedsim.load_config(cfg)).y_train.numpy()
    other = partitioners.partition(y, "dirichlet", 4, seed=7, beta=0.5, min_size=10)
    partitioners.save_dataidxs(
        run / "dataidxs.npz", other, y, "dirichlet", {"beta": 0.5, "min_size": 10, "max_redraws": 1000}, 7
    )
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["run", _cfg_file(tmp_path, cfg), "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed=7" in err[0]
    assert (run / "metrics.jsonl").read_bytes() == before


def test_resume_names_the_differing_keys_says_where_it_goes_on_and_extends_a_finished_run(tmp_path, tiny, capsys):
    cfg = tiny(federation={"rounds": 2})
    path = _cfg_file(tmp_path, cfg)
    out = tmp_path / "r"
    assert main(["run", path, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", path, "train.lr=0.2", "seed=3", "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "seed: 0 -> 3" in err and "train.lr: 0.1 -> 0.2" in err
    assert main(["run", path, "--out", str(out), "--resume", "--quiet"]) == 0
    assert "already finished after 2 rounds" in capsys.readouterr().err
    # raising federation.rounds trains the finished run on, exactly as one longer run
    assert main(["run", path, "federation.rounds=3", "--out", str(out), "--resume"]) == 0
    assert "resuming from round 2 of 3" in capsys.readouterr().out
    longer = fedsim.run(tiny(federation={"rounds": 3}), out=tmp_path / "long")
    assert _same_weights(out, longer.run_dir)
    assert [r["round"] for r in _rows(out / "metrics.jsonl")] == [1, 2, 3]
    with pytest.raises(RunDirError, match="extended, not shortened"):
        fedsim.run(tiny(federation={"rounds": 1}), out=out, resume=True)


# ---------------------------------------------------------------------------- sweeps


def test_sweep_settings_that_resolve_to_one_config_get_one_directory_each(tmp_path, tiny):
    spec = {
        "name": "dup",
        "base": tiny(federation={"rounds": 1}),
        "grid": {"partition": [{"label": "a", "scheme": "iid"}, {"label": "b", "scheme": "iid"}]},
        "seeds": [0],
    }
    res = fedsim.sweep(spec, out=tmp_path / "s")
    dirs = sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir())
    assert dirs == ["partition=a__seed=0", "partition=b__seed=0"]
    assert res.n_finished == 2
    again = fedsim.sweep(spec, out=tmp_path / "s", resume=True)
    assert again.n_finished == 2 and all(r.get("status") == "finished" for r in again.rows)


# SIGTERM's variant (12 s under load) is slow-marked: SIGKILL is the harder case and
# test_sigterm_stops_a_run_like_ctrl_c_and_it_resumes covers SIGTERM on a run
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["sigkill", "sigterm"]
)
def test_sweep_workers_die_within_seconds_of_the_parents_sigkill(tmp_path, tiny, sig):
    """SIGKILL: the workers die with their parent; SIGTERM (a scheduler's preemption):
    the sweep stops now, its runs too (they resume from their checkpoints), with one
    line and exit code 143, not after its running runs have finished."""
    spec = {
        "name": "slow",
        # runs far longer than the test waits: whatever ends them is the signal
        "base": tiny(federation={"rounds": 1000}, data={"n_train": 1200}),
        "grid": {"strategy.name": ["fedavg", "fedprox"]},
        "seeds": [0],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedsim.cli",
            "sweep",
            str(path),
            "--out",
            str(tmp_path / "s"),
            "--workers",
            "2",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.2)
            workers = [
                int(p)
                for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            ]
            workers = [
                w
                for w in workers
                if "fedsim" in Path(f"/proc/{w}/cmdline").read_text(errors="ignore")
                or "multiprocessing" in Path(f"/proc/{w}/cmdline").read_text(errors="ignore")
            ]
        assert workers, "the sweep never started its workers"
        while time.time() < deadline and not list((tmp_path / "s").glob("*/metrics.jsonl")):
            time.sleep(0.2)  # the workers are training
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
        gone = time.time() + 10
        while time.time() < gone and any(Path(f"/proc/{w}").exists() and "zombie" not in _state(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in _state(w)]
    finally:
        if proc.poll() is None:
            proc.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


# ---------------------------------------------------------------- one line, exit 2


def test_sigterm_stops_a_run_like_ctrl_c_and_it_resumes(tmp_path, tiny):
    cfg = tiny(federation={"rounds": 5}, data={"n_train": 1200})
    path = _cfg_file(tmp_path, cfg)
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", path, "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _wait_for_rows(out / "metrics.jsonl", 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines() == [
        f"fedsim: terminated (SIGTERM); continue with: fedsim run {path} --out {out} --resume --quiet"
    ]
    done = fedsim.run(cfg, out=out, resume=True)
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    assert done.summary["rounds"] == 5 and _same_weights(out, ref.run_dir)


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, tiny, capsys, full_disk):
    cfg = tiny(federation={"rounds": 3})
    path = _cfg_file(tmp_path, cfg)
    free = full_disk(2)
    assert main(["run", path, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "--resume" in err[0]
    free()
    done = fedsim.run(cfg, out=tmp_path / "r", resume=True)
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    assert done.summary["rounds"] == 3 and _same_weights(tmp_path / "r", ref.run_dir)


def test_a_read_only_out_is_one_line(tmp_path, tiny, capsys, monkeypatch):
    path = _cfg_file(tmp_path, tiny(federation={"rounds": 1}))

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["run", path, "--out", str(tmp_path / "ro" / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0]


@pytest.mark.parametrize(
    "values, fragment", [(np.array([0, 1, 2**62]), "class ids from 0 to"), (np.array([0.0, 1e8]), "float64 values")]
)
def test_huge_or_float_label_files_are_refused(tmp_path, capsys, values, fragment):
    np.save(tmp_path / "labels.npy", values)
    assert (
        main(
            [
                "partition",
                "--labels",
                str(tmp_path / "labels.npy"),
                "partition.n_parties=2",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not (tmp_path / "p").exists()


def test_a_dead_ray_head_is_one_line_in_bounded_time(tmp_path, tiny, capsys):
    path = _cfg_file(tmp_path, tiny())
    t0 = time.time()
    assert (
        main(
            ["run", path, "engine.name=ray", "engine.ray_address=127.0.0.1:9", "--out", str(tmp_path / "r"), "--quiet"]
        )
        == 2
    )
    assert time.time() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Ray head at 127.0.0.1:9" in err[0] and "ray start --head" in err[0]
    assert not (tmp_path / "r").exists()


def test_damaged_records_given_to_report_and_resume_are_one_line(tmp_path, tiny, capsys):
    cfg = tiny(federation={"rounds": 1})
    run = fedsim.run(cfg, out=tmp_path / "r").run_dir
    (run / "summary.json").write_bytes(b"\x89PNG\x00\x01binary")
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "summary" in err[0] and "not readable JSON" in err[0]
    assert main(["run", _cfg_file(tmp_path, cfg), "--out", str(run), "--resume", "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------------ small ones


def test_overrides_after_an_option_and_the_partition_label_form(tmp_path, tiny, capsys):
    path = _cfg_file(tmp_path, tiny())
    assert main(["run", path, "--quiet", "federation.rounds=1", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["rounds"] == 1
    np.save(tmp_path / "labels.npy", np.arange(60) % 3)
    assert (
        main(
            [
                "partition",
                "--labels",
                str(tmp_path / "labels.npy"),
                "partition.n_parties=3",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    assert partitioners.read_dataidxs_meta(tmp_path / "p" / "dataidxs.npz")["n_parties"] == 3


def test_files_and_folders_follow_the_umask(tmp_path, tiny):
    old = os.umask(0o022)
    try:
        run = fedsim.run(tiny(federation={"rounds": 1}), out=tmp_path / "r").run_dir
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(run / "dataidxs.npz") == 0o644 and mode(run / "summary.json") == 0o644
    ckpt = next((run / "checkpoints").glob("round_*"))
    assert mode(ckpt) == 0o755 and mode(ckpt / "state.pt") == 0o644
