"""The checkpoint is written on a thread of its own while the next round trains
(fedsim/server/callbacks/checkpoints.py): its error still stops the run with the same
line, at the next checkpoint or when the run ends, and a kill while it is being written
resumes from the checkpoint before it, equal to an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import fedsim
from fedsim.cli import main
from fedsim.rundir.checkpoint import BackgroundWriter
from fedsim.server.callbacks import RoundCallback, RunProgress
from fedsim.server.recorder import Recorder

TIMING = ("round_time_s", "time_s", "train_time_s", "wall_time_s")


def _rows(path: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)}
        for line in path.read_text().splitlines()
    ]


def test_a_failed_write_is_raised_once_at_the_next_write_or_the_close():
    writer = BackgroundWriter()
    full = OSError(errno.ENOSPC, "No space left on device", "/run/checkpoints/.round_000002.x/state.pt")

    def fail() -> None:
        raise full

    writer.submit(fail)
    with pytest.raises(OSError) as raised:
        writer.submit(lambda: None)  # the next checkpoint does not start
    assert raised.value is full
    writer.wait()  # raised once
    writer.submit(fail)
    with pytest.raises(OSError) as raised:
        writer.close()
    assert raised.value is full
    writer.close()


def test_a_close_that_fails_stops_the_run_and_the_callbacks_after_it_learn_why():
    seen: list[BaseException | None] = []

    class Failing(RoundCallback):
        def on_close(self, exc: BaseException | None) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    class After(RoundCallback):
        def on_close(self, exc: BaseException | None) -> None:
            seen.append(exc)

    with pytest.raises(OSError):
        Recorder(RunProgress([], 0.0), [Failing(), After()]).close()
    assert isinstance(seen[0], OSError)  # trackers mark the run failed, as before


def test_a_full_disk_in_the_last_checkpoint_is_one_line_at_the_end_and_the_run_resumes(
    tmp_path, tiny, capsys, full_disk
):
    """The last round's checkpoint fails on the writer thread: the error comes when the
    round loop ends (not later, not lost), with the file it could not write."""
    cfg = tiny(federation={"rounds": 2})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    free = full_disk(2)
    out = tmp_path / "r"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0] and "--resume" in err[0]
    assert "state.pt'" in err[0] and str(out / "checkpoints") in err[0]
    assert not (out / "summary.json").exists() and not (out / "checkpoints" / "round_000002").exists()
    assert not list((out / "checkpoints").glob(".round_*"))
    free()
    fedsim.run(cfg, out=out, resume=True)
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    assert (out / "model.pt").read_bytes() == (ref.run_dir / "model.pt").read_bytes()
    assert _rows(out / "metrics.jsonl") == _rows(ref.run_dir / "metrics.jsonl")


#: the CLI with round 2's checkpoint stalled between its state.pt and its manifest
_STALLED = """
    import os, runpy, sys, time
    from pathlib import Path
    import fedsim.rundir.checkpoint as ck
    real = ck.atomic_write_json
    def stalled(path, obj):
        if Path(path).parent.name.startswith(".round_000002."):
            Path(os.environ["STALL_MARK"]).touch()
            time.sleep(120)
        return real(path, obj)
    ck.atomic_write_json = stalled
    sys.argv = ["fedsim", *sys.argv[1:]]
    runpy.run_module("fedsim.cli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow  # 8 s: the writer's error and close semantics have fast tests above
def test_a_kill_while_a_checkpoint_is_written_resumes_from_the_one_before(tmp_path, tiny):
    """SIGKILL once round 2's checkpoint is half written and round 3 is recorded (the
    round loop went on): round 2's checkpoint is not there, the resume starts after
    round 1, cuts the records back to it and ends byte-equal to an uninterrupted run."""
    cfg = tiny(federation={"rounds": 4})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    script = tmp_path / "stalled.py"
    script.write_text(textwrap.dedent(_STALLED))
    out, mark = tmp_path / "killed", tmp_path / "stalled"
    # the script's own folder leads its sys.path: this checkout's fedsim, not an installed one
    root = str(Path(fedsim.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", STALL_MARK=str(mark), PYTHONPATH=pythonpath)
    args = ["run", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, str(script), *args], stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while not (mark.exists() and len(_rows_or_none(out / "metrics.jsonl")) >= 3):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpts = out / "checkpoints"
    assert (ckpts / "round_000001").is_dir() and not (ckpts / "round_000002").exists()
    assert list(ckpts.glob(".round_000002.*"))  # the half-written one
    done = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", *args, "--resume"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    ref = fedsim.run(cfg, out=tmp_path / "ref")
    assert (out / "model.pt").read_bytes() == (ref.run_dir / "model.pt").read_bytes()
    assert _rows(out / "metrics.jsonl") == _rows(ref.run_dir / "metrics.jsonl")
    assert _rows(out / "clients.jsonl") == _rows(ref.run_dir / "clients.jsonl")
    assert not list(ckpts.glob(".round_*"))


def _rows_or_none(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
