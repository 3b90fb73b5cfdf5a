"""LEAF's FEMNIST and Shakespeare JSON: exact arrays, users as groups, the cache, errors, runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from data_writers import (
    FEMNIST_USERS,
    SHAKESPEARE_USERS,
    call_releasing_fifo,
    write_leaf_femnist,
    write_leaf_shakespeare,
)

import fedsim
import partitioners
from fedsim.cli import main
from fedsim.data import clear_cache, leaf, load_dataset
from fedsim.data.cache import CACHE_DIR
from fedsim.data.text import ALPHABET
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def load(name, root):
    return load_dataset(DataConfig(dataset=name, root=str(root)), 0, 1)


def test_femnist_exact_arrays_and_users(tmp_path):
    exp = write_leaf_femnist(tmp_path)
    b = load("leaf-femnist", tmp_path)
    x_tr, y_tr, u_tr = exp["train"]
    assert b.x_train.dtype == torch.uint8 and tuple(b.x_train.shape) == (22, 1, 28, 28)
    assert torch.equal(b.x_train, torch.from_numpy(x_tr)) and b.y_train.tolist() == y_tr.tolist()
    assert torch.equal(b.x_test, torch.from_numpy(exp["test"][0])) and b.y_test.tolist() == exp["test"][1].tolist()
    assert b.num_classes == 62 and b.input_shape == (1, 28, 28) and not b.augment
    # users sorted by name over both splits: u0..u3 -> 0..3, the same ids in train and test
    assert b.groups.tolist() == [int(u[1:]) for u in u_tr]
    assert b.groups_test.tolist() == [int(u[1:]) for u in exp["test"][2]]
    assert np.bincount(b.groups).tolist() == [n for n, _ in FEMNIST_USERS.values()]
    # normalisation statistics of the training pixels
    px = x_tr.astype(np.float64) / 255
    assert b.mean[0] == pytest.approx(px.mean(), abs=1e-6) and b.std[0] == pytest.approx(px.std(), abs=1e-6)


def test_shakespeare_tokens_and_next_character(tmp_path):
    exp = write_leaf_shakespeare(tmp_path)
    b = load("leaf-shakespeare", tmp_path)
    x, y, users = exp["train"]
    assert b.is_text and b.x_train.dtype == torch.int64 and tuple(b.x_train.shape) == (29, 20)
    assert b.x_train[0].tolist() == [ALPHABET.index(c) for c in x[0]]
    assert b.y_train.tolist() == [ALPHABET.index(c) for c in y]
    assert b.num_classes == 80 and b.mean is None and b.std is None
    names = sorted(SHAKESPEARE_USERS)
    assert b.groups.tolist() == [names.index(u) for u in users]
    assert b.groups_test.tolist() == [names.index(u) for u in exp["test"][2]]


def test_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    write_leaf_femnist(tmp_path)
    first = load("leaf-femnist", tmp_path)
    entries = list((tmp_path / CACHE_DIR).iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == [
        "groups.npy",
        "groups_test.npy",
        "meta.json",
        "x_test.npy",
        "x_train.npy",
        "y_test.npy",
        "y_train.npy",
    ]
    clear_cache()
    monkeypatch.setattr(leaf, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    second = load("leaf-femnist", tmp_path)
    assert torch.equal(first.x_train, second.x_train) and np.array_equal(first.groups_test, second.groups_test)
    assert first.mean == second.mean


def test_a_changed_file_is_decoded_again(tmp_path):
    write_leaf_femnist(tmp_path)
    load("leaf-femnist", tmp_path)
    clear_cache()
    path = sorted((tmp_path / "test").glob("*.json"))[0]
    doc = json.loads(path.read_text())
    doc["user_data"]["u0"]["y"] = [61] * len(doc["user_data"]["u0"]["y"])
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    b = load("leaf-femnist", tmp_path)
    assert b.y_test[:2].tolist() == [61, 61]
    assert len(list((tmp_path / CACHE_DIR).iterdir())) == 2


def test_an_unwritable_folder_still_loads(tmp_path, caplog):
    write_leaf_femnist(tmp_path)
    (tmp_path / CACHE_DIR).write_text("a file where the cache folder would go")
    b = load("leaf-femnist", tmp_path)
    assert len(b.y_train) == 22
    assert any("cannot cache" in m for m in caplog.messages)


@pytest.mark.parametrize(
    "corrupt, fragment",
    [
        (lambda p: p.write_text('{"users": ["u0"], "user_data": {'), "is not valid JSON: Expecting property name"),
        (lambda p: p.write_text("[1, 2]"), "needs keys 'users'"),
        (lambda p: p.write_text('{"users": ["u9"], "user_data": {}}'), "user 'u9' has no 'x' and 'y'"),
        (
            lambda p: p.write_text('{"users": ["u0"], "user_data": {"u0": {"x": [[0.5]], "y": [1]}}}'),
            "784 pixel values",
        ),
        (
            lambda p: p.write_text('{"users": ["u0"], "user_data": {"u0": {"x": [[0.5]], "y": [1, 2]}}}'),
            "1 samples in 'x' but 2 in 'y'",
        ),
    ],
)
def test_bad_files_name_the_file(tmp_path, corrupt, fragment):
    write_leaf_femnist(tmp_path)
    bad = sorted((tmp_path / "train").glob("*.json"))[1]
    corrupt(bad)
    with pytest.raises(DataError, match=fragment) as info:
        load("leaf-femnist", tmp_path)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_missing_folder_and_unknown_character(tmp_path):
    with pytest.raises(DataError, match=r"no train/\*\.json under data.root"):
        load("leaf-shakespeare", tmp_path)
    write_leaf_shakespeare(tmp_path)
    path = tmp_path / "train" / "all_data_niid_0_keep_0_train_9.json"
    doc = json.loads(path.read_text())
    doc["user_data"]["HAMLET_HAMLET"]["x"][3] = "é" * 20
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="character 'é' .* not in LEAF's 80-character alphabet"):
        load("leaf-shakespeare", tmp_path)


def test_cli_reports_malformed_json_in_one_line(tmp_path, capsys):
    write_leaf_femnist(tmp_path / "leaf")
    (tmp_path / "leaf" / "test" / "broken.json").write_text("{not json")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{dataset: leaf-femnist, root: '{tmp_path / 'leaf'}'}}\npartition: {{scheme: natural, n_parties: 4}}\n"
    )
    code = main(["partition", str(cfg), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "broken.json' is not valid JSON" in err
    assert not (tmp_path / "p").exists()


def test_natural_partition_gives_users_to_parties(tmp_path):
    write_leaf_femnist(tmp_path)
    b = load("leaf-femnist", tmp_path)
    one_each = partitioners.partition(b.y_train.numpy(), "natural", 4, seed=3, groups=b.groups)
    owners = [np.unique(b.groups[idx]).tolist() for idx in one_each.values()]
    assert sorted(o[0] for o in owners) == [0, 1, 2, 3] and all(len(o) == 1 for o in owners)
    two = partitioners.partition(b.y_train.numpy(), "natural", 2, seed=3, groups=b.groups)
    assert sorted(len(np.unique(b.groups[idx])) for idx in two.values()) == [2, 2]
    # each party's users' own test samples (issue 16's local test sets)
    local = partitioners.group_test_indices(b.groups, b.groups_test, two)
    for j, idx in two.items():
        assert set(b.groups_test[local[j]]) == set(b.groups[idx])
    assert sorted(np.concatenate(list(local.values())).tolist()) == list(range(len(b.y_test)))


def _run_cfg(tiny, name, root, model, **over):
    cfg = tiny(
        model={"name": model},
        partition={"scheme": "natural", "n_parties": 3},
        train={"epochs": 1, "batch_size": 8, "lr": 0.05},
        **over,
    )
    cfg["data"] = {"dataset": name, "root": str(root)}
    return cfg


def test_two_rounds_on_femnist_with_users_as_parties(tmp_path, tiny):
    write_leaf_femnist(tmp_path / "leaf")
    r = fedsim.run(_run_cfg(tiny, "leaf-femnist", tmp_path / "leaf", "femnist-cnn"), out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    assert [h["round"] for h in r.history if "test_accuracy" in h] == [1, 2]
    # 9 test samples: the accuracy is a count of them
    assert r.summary["test_accuracy"] * 9 == pytest.approx(round(r.summary["test_accuracy"] * 9))
    part = json.loads((r.run_dir / "partition.json").read_text())
    b = load("leaf-femnist", tmp_path / "leaf")
    want = partitioners.partition(b.y_train.numpy(), "natural", 3, seed=0, groups=b.groups)
    assert part["scheme"] == "natural" and part["n_samples"] == 22
    assert np.array(part["class_counts"]).sum(axis=1).tolist() == [len(want[j]) for j in range(3)]


def test_two_rounds_on_shakespeare_next_character(tmp_path, tiny):
    write_leaf_shakespeare(tmp_path / "leaf")
    r = fedsim.run(_run_cfg(tiny, "leaf-shakespeare", tmp_path / "leaf", "char-lstm"), out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    last = [h for h in r.history if "test_accuracy" in h][-1]
    # next-character accuracy and loss in the same metrics: 10 test samples, 80 classes
    assert last["test_accuracy"] * 10 == pytest.approx(round(last["test_accuracy"] * 10))
    assert np.isfinite(last["test_loss"]) and last["test_loss"] > 0


def test_batched_trainer_falls_back_for_the_lstm_with_a_logged_reason(tmp_path, tiny, caplog):
    import logging

    write_leaf_shakespeare(tmp_path / "leaf", length=8)
    cfg = _run_cfg(
        tiny,
        "leaf-shakespeare",
        tmp_path / "leaf",
        "char-lstm",
        engine={"batch_clients": "on"},
        federation={"rounds": 1},
    )
    with caplog.at_level(logging.WARNING, logger="fedsim.engine.batched"):
        r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["rounds"] == 1
    assert any("one at a time" in m and "recurrent layer (nn.LSTM)" in m for m in caplog.messages), caplog.messages


def test_batched_trainer_runs_femnist_cnn_like_the_sequential_one(tmp_path, tiny):
    write_leaf_femnist(tmp_path / "leaf")
    weights = {}
    for mode in ("off", "on"):
        cfg = _run_cfg(
            tiny,
            "leaf-femnist",
            tmp_path / "leaf",
            "femnist-cnn",
            engine={"batch_clients": mode},
            federation={"rounds": 1},
        )
        r = fedsim.run(cfg, out=tmp_path / mode)
        weights[mode] = torch.load(r.run_dir / "model.pt", weights_only=True)
    for k in weights["off"]:
        torch.testing.assert_close(weights["on"][k], weights["off"][k], rtol=0, atol=1e-5)


def _edit(change):
    def apply(path):
        doc = json.loads(path.read_text())
        change(doc, doc["users"][0])
        path.write_text(json.dumps(doc))

    return apply


@pytest.mark.parametrize(
    "corrupt, fragment",
    [
        # hostile: a traceback before (OverflowError, RecursionError)
        (_edit(lambda d, u: d["user_data"][u]["y"].__setitem__(0, 10**30)), "label 10000000000000000000000000"),
        (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
        # silently changed before: 1.7 became 1, NaN and null became 0, a user counted twice
        (_edit(lambda d, u: d["user_data"][u]["y"].__setitem__(0, 1.7)), "label 1.7 of sample 0 is not a class id"),
        (_edit(lambda d, u: d["user_data"][u]["y"].__setitem__(1, True)), "label true of sample 1 is not a class id"),
        (_edit(lambda d, u: d["user_data"][u]["x"][0].__setitem__(5, float("nan"))), "pixel 5 of sample 0 is NaN"),
        (_edit(lambda d, u: d["user_data"][u]["x"][1].__setitem__(0, None)), "pixel 0 of sample 1 is null"),
        (_edit(lambda d, u: d["user_data"][u]["x"][0].__setitem__(0, 255.0)), "pixel 0 of sample 0 is 255.0"),
        (_edit(lambda d, u: d["users"].append(u)), "user 'u0' is listed twice in 'users'"),
    ],
)
def test_hostile_or_odd_values_are_one_line_and_exit_2(tmp_path, capsys, corrupt, fragment):
    write_leaf_femnist(tmp_path / "leaf")
    bad = sorted((tmp_path / "leaf" / "train").glob("*.json"))[0]
    corrupt(bad)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{dataset: leaf-femnist, root: '{tmp_path / 'leaf'}'}}\npartition: {{scheme: natural, n_parties: 2}}\n"
    )
    code = main(["partition", str(cfg), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0] and bad.name in err[0], err
    assert not (tmp_path / "p").exists()


def test_whole_float_labels_are_class_ids_and_fractions_are_refused(tmp_path):
    write_leaf_femnist(tmp_path)
    want = load("leaf-femnist", tmp_path).y_train.clone()
    paths = sorted((tmp_path / "train").glob("*.json"))
    for path in paths:
        doc = json.loads(path.read_text())
        for data in doc["user_data"].values():
            data["y"] = [float(v) for v in data["y"]]
        path.write_text(json.dumps(doc))
    clear_cache()
    assert torch.equal(load("leaf-femnist", tmp_path).y_train, want)  # 2.0 is class 2
    doc = json.loads(paths[0].read_text())
    doc["user_data"][doc["users"][0]]["y"][0] += 0.7  # was truncated to the class below
    paths[0].write_text(json.dumps(doc))
    clear_cache()
    with pytest.raises(DataError, match=r"label \d+\.7 of sample 0 is not a class id"):
        load("leaf-femnist", tmp_path)


def test_a_fifo_named_json_is_skipped_not_waited_on(tmp_path, caplog):
    write_leaf_femnist(tmp_path)
    os.mkfifo(tmp_path / "train" / "pipe.json")
    with caplog.at_level("WARNING", logger="fedsim.data.leaf"):
        b = call_releasing_fifo(lambda: load("leaf-femnist", tmp_path), tmp_path / "train" / "pipe.json")
    assert len(b.y_train) == 22 and any("pipe.json" in m and "not a regular file" in m for m in caplog.messages)
