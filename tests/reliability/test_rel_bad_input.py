"""Table-driven bad input: exit code 2, one line on stderr, no traceback, no file changed."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import fedsim
from fedsim.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("finished")
    cfg = tiny(federation={"rounds": 1})
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    fedsim.run(cfg, out=root / "run")
    return root


def _write_cfg(tmp: Path, tiny, **sections) -> str:
    p = tmp / "cfg.yaml"
    p.write_text(yaml.safe_dump(tiny(**sections)))
    return str(p)


@pytest.fixture
def write_cfg(tmp_path, tiny):
    """``write_cfg(**sections)``: the tiny config written to ``tmp_path/cfg.yaml``; its path."""
    return lambda **sections: _write_cfg(tmp_path, tiny, **sections)


def _copy_run(tmp, finished):
    shutil.copytree(finished / "run", tmp / "run")
    shutil.copy(finished / "cfg.yaml", tmp / "cfg.yaml")
    (tmp / "run" / "summary.json").unlink()  # an interrupted run, so --resume has work to do
    return str(tmp / "cfg.yaml"), str(tmp / "run")


def c_unknown_top_key(tmp, fin, cfg):
    return ["run", cfg(), "sed=1"]


def c_unknown_nested_key(tmp, fin, cfg):
    return ["run", cfg(), "data.datset=mnist"]


def c_unknown_key_in_yaml(tmp, fin, cfg):
    p = tmp / "c.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    return ["run", str(p)]


def c_unknown_strategy(tmp, fin, cfg):
    return ["run", cfg(), "strategy.name=fedsgd"]


def c_unknown_model(tmp, fin, cfg):
    return ["run", cfg(), "model.name=vgg11"]


def c_unknown_dataset(tmp, fin, cfg):
    return ["run", cfg(), "data.dataset=imagenet"]


def c_unknown_scheme(tmp, fin, cfg):
    return ["run", cfg(), "partition.scheme=pathological"]


def c_lr_out_of_range(tmp, fin, cfg):
    return ["run", cfg(), "train.lr=-0.1"]


def c_wrong_type(tmp, fin, cfg):
    return ["run", cfg(), "train.batch_size=big"]


def c_fraction_zero(tmp, fin, cfg):
    return ["run", cfg(), "federation.fraction_fit=0"]


def c_epochs_reversed(tmp, fin, cfg):
    return ["run", cfg(), "train.epochs=[3,1]"]


def c_override_without_equals(tmp, fin, cfg):
    return ["run", cfg(), "train.lr"]


def c_missing_config(tmp, fin, cfg):
    return ["run", str(tmp / "nope.yaml")]


def c_config_is_directory(tmp, fin, cfg):
    (tmp / "adir").mkdir()
    return ["run", str(tmp / "adir")]


def c_corrupt_yaml(tmp, fin, cfg):
    p = tmp / "c.yaml"
    p.write_text("train: {lr: [0.1\n")
    return ["run", str(p)]


def c_yaml_list(tmp, fin, cfg):
    p = tmp / "c.yaml"
    p.write_text("- a\n- b\n")
    return ["run", str(p)]


def c_moon_without_head(tmp, fin, cfg):
    return ["run", cfg(), "strategy.name=moon"]


def c_fednova_with_adam(tmp, fin, cfg):
    return ["run", cfg(), "strategy.name=fednova", "train.optimizer=adam"]


def c_classes_per_party_too_many(tmp, fin, cfg):
    return ["run", cfg(), "partition.scheme=label-quantity", "partition.classes_per_party=9"]


def c_too_many_parties(tmp, fin, cfg):
    return ["run", cfg(), "partition.n_parties=5000", "partition.scheme=iid"]


def c_min_size_impossible(tmp, fin, cfg):
    return ["run", cfg(), "partition.min_size=200"]


def c_missing_dataset_files(tmp, fin, cfg):
    (tmp / "empty").mkdir()
    return ["run", cfg(), "data.dataset=mnist", f"data.root={tmp / 'empty'}"]


def c_out_is_a_file(tmp, fin, cfg):
    (tmp / "out.txt").write_text("precious")
    return ["run", cfg(), "--out", str(tmp / "out.txt")]


def c_out_not_empty(tmp, fin, cfg):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.md").write_text("precious")
    return ["run", cfg(), "--out", str(tmp / "out")]


def c_resume_with_other_config(tmp, fin, cfg):
    cfg, run = _copy_run(tmp, fin)
    return ["run", cfg, "train.lr=0.2", "--out", run, "--resume"]


def c_corrupt_dataidxs(tmp, fin, cfg):
    cfg, run = _copy_run(tmp, fin)
    (Path(run) / "dataidxs.npz").write_bytes(b"not an npz file")
    return ["run", cfg, "--out", run, "--resume"]


def c_dataidxs_of_another_dataset(tmp, fin, cfg):
    import partitioners

    cfg, run = _copy_run(tmp, fin)
    other = np.arange(400) % 3  # same size, other labels
    partitioners.save_dataidxs(Path(run) / "dataidxs.npz", partitioners.partition(other, "iid", 4), other, "iid", {}, 0)
    return ["run", cfg, "--out", run, "--resume"]


def c_corrupt_checkpoint(tmp, fin, cfg):
    cfg, run = _copy_run(tmp, fin)
    for state in (Path(run) / "checkpoints").glob("round_*/state.pt"):
        state.write_bytes(b"\x00garbage")
    return ["run", cfg, "--out", run, "--resume"]


def c_partition_labels_missing(tmp, fin, cfg):
    return ["partition", "--labels", str(tmp / "nope.npy"), "partition.scheme=iid"]


def c_partition_labels_not_int(tmp, fin, cfg):
    np.save(tmp / "labels.npy", np.linspace(0, 1, 50))
    return ["partition", "--labels", str(tmp / "labels.npy"), "partition.scheme=iid", "--out", str(tmp / "p")]


def c_inspect_unknown_model(tmp, fin, cfg):
    return ["inspect", "lenet7"]


def c_bad_device(tmp, fin, cfg):
    return ["run", cfg(), "engine.device=tpu"]


def c_unknown_cli_flag(tmp, fin, cfg):
    return ["run", cfg(), "--resum"]


def c_config_is_a_scalar(tmp, fin, cfg):
    p = tmp / "c.yaml"
    p.write_text("42\n")
    return ["run", str(p)]


def c_config_is_a_boolean(tmp, fin, cfg):
    p = tmp / "c.yaml"
    p.write_text("true\n")
    return ["run", str(p)]


def c_seed_beyond_int64(tmp, fin, cfg):
    return ["run", cfg(), "seed=9223372036854775808"]


def c_lr_infinite(tmp, fin, cfg):
    return ["run", cfg(), "train.lr=.inf"]


def c_malformed_override(tmp, fin, cfg):
    return ["run", cfg(), "train.epochs=[1,3"]


def c_data_too_large_for_memory(tmp, fin, cfg):
    return ["run", cfg(), "data.n_train=100000000000"]


def c_classes_too_many_for_memory(tmp, fin, cfg):
    return ["run", cfg(), "data.num_classes=10000000000"]


def c_inspect_model_too_large(tmp, fin, cfg):
    return ["inspect", "mlp", "model.hidden=[100000,100000]"]


def c_strategy_key_of_another_algorithm(tmp, fin, cfg):
    return ["run", cfg(), "strategy.mu=0.1"]


def c_resume_binary_config(tmp, fin, cfg):
    cfg, run = _copy_run(tmp, fin)
    (Path(run) / "config.yaml").write_bytes(b"\x00\x01\x02binary")
    return ["run", cfg, "--out", run, "--resume"]


CASES = [v for k, v in sorted(globals().items()) if k.startswith("c_")]


def _snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[2:] for c in CASES])
def test_bad_input(tmp_path, finished_run, write_cfg, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)  # a default --out lands here, never in the repository
    argv = case(tmp_path, finished_run, write_cfg)
    before = _snapshot(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("fedsim")
    assert _snapshot(tmp_path) == before


def test_table_is_large_enough():
    assert len(CASES) >= 20


def test_a_real_process_exits_2_without_traceback(write_cfg):
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", write_cfg(), "train.momentum=2"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "train.momentum" in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", write_cfg(), "train.momentum=2", "--debug"],
        capture_output=True,
        text=True,
    )
    assert "Traceback" in debug.stderr
