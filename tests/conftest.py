from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fedsim.util.flower_compat import DEPRECATION_MARKER


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models per call: one thread avoids OpenMP spin-waiting when the suite shares
    # 2 cores with other work (2 threads under load were 10x slower per step).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _quiet_flower():
    logging.getLogger("flwr").setLevel(logging.WARNING)
    yield


class _Notices(logging.Handler):
    """Flower's deprecation notices: WARNING records on its logger (not Python warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if DEPRECATION_MARKER in record.getMessage():
            self.records.append(record)


@pytest.fixture(autouse=True)
def flower_deprecations():
    """Every test fails if Flower logs a deprecation notice while it runs: fedsim uses no
    deprecated Flower API. The list of notices is the fixture's value (a test that
    provokes one on purpose clears it)."""
    notices = _Notices()
    flwr_log = logging.getLogger("flwr")
    flwr_log.addHandler(notices)
    try:
        yield notices.records
    finally:
        flwr_log.removeHandler(notices)
    if notices.records:
        pytest.fail(
            "Flower logged a deprecation: " + " | ".join(" ".join(r.getMessage().split()) for r in notices.records)
        )


def tiny_config(**sections) -> dict:
    """A run small enough for the default test suite (about a second a round)."""
    cfg = {
        "seed": 0,
        "data": {
            "dataset": "synthetic-images",
            "n_train": 400,
            "n_test": 200,
            "image_shape": [3, 16, 16],
            "num_classes": 4,
            "noise": 0.4,
        },
        "partition": {"scheme": "dirichlet", "n_parties": 4, "beta": 0.5, "min_size": 10},
        "model": {"name": "simple-cnn"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.5},
        "strategy": {"name": "fedavg"},
        "federation": {"rounds": 2},
        "eval": {"train_sample": 200},
        "output": {"plots": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


@pytest.fixture(scope="session")
def tiny():
    """``tiny(**sections)``: the tiny run's config with sections updated (session-scoped:
    it is a pure function, so module fixtures can use it too)."""
    return tiny_config


#: what an algorithm's check() needs beyond the tiny run
ALGORITHM_NEEDS = {"moon": {"model": {"projection_head": True}}, "feddc": {"train": {"momentum": 0.0}}}


def needs_of(name: str, **sections) -> dict:
    """``sections`` with the config an algorithm needs merged in (section by section)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in sections.items()}
    for section, values in ALGORITHM_NEEDS.get(name, {}).items():
        out.setdefault(section, {}).update(values)
    return out


@pytest.fixture
def needs():
    return needs_of


def kill_after_rows(cmd: list[str], metrics: Path, k: int, env: dict) -> int:
    """Start ``cmd``, SIGKILL it once ``metrics`` holds ``k`` rows (mid-run), return its
    exit code; fails the test if the run finishes first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= k:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


def sigkill_then_resume(cfg: dict, tmp_path: Path, k: int, before_resume=None) -> Path:
    """Run ``cfg`` with the CLI in a real process, SIGKILL it once its metrics.jsonl holds
    ``k`` rows (unfinished: no summary.json), call ``before_resume(out)`` if given, resume
    it with ``--resume`` (exit 0) and return its run directory, ``tmp_path / "killed"``."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fedsim.cli", "run", str(path), "--out", str(out), "--quiet"]
    assert kill_after_rows(cmd, out / "metrics.jsonl", k, env) == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    if before_resume is not None:
        before_resume(out)
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return out


def fill_the_disk_at(monkeypatch, round_: int):
    """The checkpoint of round ``round_`` fails to write its state.pt with ENOSPC (as a
    full disk's ``write()`` does, naming the file); returns the call that frees the disk."""
    import fedsim.rundir.store as store

    real = store._atomic_write

    def full(p, write):
        if Path(p).name == "state.pt" and f".round_{round_:06d}." in str(p):
            raise OSError(errno.ENOSPC, "No space left on device", str(p))
        return real(p, write)

    monkeypatch.setattr(store, "_atomic_write", full)
    return lambda: monkeypatch.setattr(store, "_atomic_write", real)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(round_)``: :func:`fill_the_disk_at` with the test's monkeypatch."""
    return lambda round_: fill_the_disk_at(monkeypatch, round_)


@pytest.fixture
def kill_and_resume():
    """``kill_and_resume(cfg, tmp_path, k, before_resume=None)``: :func:`sigkill_then_resume`."""
    return sigkill_then_resume
