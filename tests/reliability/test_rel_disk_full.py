"""A full disk is the machine's failure, never a client's: one line naming the disk and
--resume, exit 2, nothing aggregated from a round that lost writes, and the resumed run
equals an uninterrupted one. Injected ENOSPC at three places (inside torch.save, in a
client's state write, in a record) and a real tmpfs that fills up."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import fedsim
import fedsim.rundir.store as store
from fedsim.cli import main


def _weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _cfg_file(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class _FullAfter:
    """A file that takes ``room`` bytes, then fails as a full disk does (what the
    kernel's ENOSPC looks like to the writer)."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def test_a_full_disk_inside_torch_save_is_one_line_and_the_run_resumes(tmp_path, tiny, capsys, monkeypatch):
    """torch.save wraps the write's ENOSPC as "RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos ...": it was exit 1 and 50 lines."""
    cfg = tiny(federation={"rounds": 3})
    path = _cfg_file(tmp_path, cfg)
    real = store._atomic_write

    def filling(p, write):
        if Path(p).name == "state.pt" and "round_000002" in str(p):
            return real(p, lambda fh: write(_FullAfter(fh, 1000)))
        return real(p, write)

    monkeypatch.setattr(store, "_atomic_write", filling)
    out = tmp_path / "r"
    assert main(["run", path, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "--resume" in err[0]
    assert "state.pt'" in err[0] and str(out / "checkpoints") in err[0]  # names where: the disk
    assert not list((out / "checkpoints").glob(".round_*"))  # no half-written checkpoint left
    monkeypatch.setattr(store, "_atomic_write", real)
    done = fedsim.run(cfg, out=out, resume=True)
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    assert done.summary["rounds"] == 3 and _same_weights(out, ref.run_dir)


def test_a_client_state_write_on_a_full_disk_stops_the_round_unaggregated(tmp_path, tiny, capsys, monkeypatch):
    """SCAFFOLD's c_i cannot be written in round 2: not "3 of 4 clients failed" and, under a
    tolerant max_failure_fraction, not a round aggregated without them; the client state
    stays as round 1 left it and the resume equals an uninterrupted run."""
    cfg = tiny(strategy={"name": "scaffold"}, federation={"rounds": 3, "max_failure_fraction": 1.0})
    path = _cfg_file(tmp_path, cfg)
    real = store.atomic_write_bytes

    def full(p, data):
        if "pending" in str(p) and "round_000002" in str(p) and not str(p).endswith("party_000000.pt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(p))
        return real(p, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full)
    out = tmp_path / "r"
    assert main(["run", path, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "round 2: the disk is full" in err[0] and "(and 2 more)" in err[0] and "--resume" in err[0]
    assert "nothing of round 2 was aggregated" in err[0] and "clients failed" not in err[0]
    assert _rounds(out) == [1] and not (out / "summary.json").exists()
    after_1 = out / "checkpoints" / "round_000001" / "client_state"
    assert {f.name: f.read_bytes() for f in (out / "client_state").glob("party_*.pt")} == {
        f.name: f.read_bytes() for f in after_1.glob("party_*.pt")
    }
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    fedsim.run(cfg, out=out, resume=True)
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    assert _rounds(out) == [1, 2, 3] and _same_weights(out, ref.run_dir)


def test_a_record_that_cannot_be_appended_names_its_file(tmp_path, tiny, capsys, monkeypatch):
    """A failed write() names no file: "No space left on device" alone says not which disk."""
    path = _cfg_file(tmp_path, tiny(federation={"rounds": 2}))

    class Full:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def write(self, text: str) -> int:
            if '"round": 2' in text:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(text)

    def opener(p, mode="r", *a, **k):
        fh = open(p, mode, *a, **k)  # noqa: SIM115 (returned open, as open() does)
        return Full(fh) if Path(p).name == "metrics.jsonl" and "a" in mode else fh

    monkeypatch.setattr(store, "open", opener, raising=False)
    out = tmp_path / "r"
    assert main(["run", path, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write '{out / 'metrics.jsonl'}': the disk is full" in err[0]


def _unshare_works() -> bool:
    if not shutil.which("unshare") or sys.platform != "linux":
        return False
    probe = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || exit 1"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.slow  # the injected ENOSPC tests above are its fast versions
@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm (user and mount namespaces) to mount a tmpfs")
def test_a_real_tmpfs_that_fills_up_is_one_line_and_resumes_once_space_is_freed(tmp_path, tiny):
    """A run on a tmpfs of 60% of what the run needs (user and mount namespaces: no root),
    then the tmpfs grown and the run resumed: the same weights as an uninterrupted run."""
    cfg = tiny(federation={"rounds": 3})
    path = _cfg_file(tmp_path, cfg)
    ref = fedsim.run(cfg, out=tmp_path / "ref").run_dir
    need = sum(f.stat().st_size for f in ref.rglob("*") if f.is_file())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    kept = tmp_path / "kept"
    fedsim_cmd = f"'{sys.executable}' -m fedsim.cli run '{path}' --out '{mnt}/run' --quiet"
    script = (
        f"mount -t tmpfs -o size={int(need * 0.6)} tmpfs '{mnt}' || exit 99; "
        f"{fedsim_cmd} 2>'{tmp_path}/err1'; echo $? > '{tmp_path}/rc1'; "
        f"mount -o remount,size={need * 4} '{mnt}' || exit 98; "
        f"{fedsim_cmd} --resume 2>'{tmp_path}/err2'; echo $? > '{tmp_path}/rc2'; "
        f"cp -r '{mnt}/run' '{kept}'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err1 = (tmp_path / "err1").read_text().strip().splitlines()
    assert (tmp_path / "rc1").read_text().strip() == "2"
    assert len(err1) == 1 and "the disk is full" in err1[0] and "--resume" in err1[0] and str(mnt) in err1[0]
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    assert _same_weights(kept, ref)
