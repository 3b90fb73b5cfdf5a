"""Image folders: ImageFolder's layout and Tiny-ImageNet's, exact pixels, resizing, errors, a run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml
from data_writers import bomb_png, call_releasing_fifo, png_images, write_png

import fedsim
from fedsim.cli import main
from fedsim.data import clear_cache, imagefolder, load_dataset
from fedsim.data.cache import CACHE_DIR
from fedsim.errors import DataError
from fedsim.schema.sections import DataConfig

pytest.importorskip("PIL", reason="Pillow (a torchvision dependency) is not installed")


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def load(root, **kw):
    return load_dataset(DataConfig(dataset="imagefolder", root=str(root), **kw), 0, 1)


def write_folders(root, eval_dir="val", shape=(10, 10, 3)):
    """train/<class>/ and <eval_dir>/<class>/ PNGs; classes 'bird', 'cat', 'dog' (sorted)."""
    counts = {"dog": (4, 2), "bird": (3, 1), "cat": (5, 2)}
    out = {"train": ([], []), eval_dir: ([], [])}
    for k, (cls, (n_tr, n_ev)) in enumerate(sorted(counts.items())):
        for split, n in (("train", n_tr), (eval_dir, n_ev)):
            arr = png_images(n, 10 * k + len(split), shape)
            for i, a in enumerate(arr):
                write_png(root / split / cls / f"img_{i:03d}.png", a)
            out[split][0].extend(arr)
            out[split][1].extend([k] * n)
    return out


def chw(arrays):
    a = np.stack(arrays)
    return torch.from_numpy(a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2).copy())


def test_imagefolder_layout_exact(tmp_path):
    exp = write_folders(tmp_path)
    b = load(tmp_path)
    assert tuple(b.x_train.shape) == (12, 3, 10, 10) and b.x_train.dtype == torch.uint8 and b.num_classes == 3
    assert torch.equal(b.x_train, chw(exp["train"][0])) and b.y_train.tolist() == exp["train"][1]
    assert torch.equal(b.x_test, chw(exp["val"][0])) and b.y_test.tolist() == [0, 1, 1, 2, 2]
    assert (tmp_path / CACHE_DIR).is_dir() and len(b.mean) == 3


def test_test_folder_grey_images_and_resize(tmp_path):
    exp = write_folders(tmp_path, eval_dir="test", shape=(9, 7, 1))
    b = load(tmp_path)
    assert tuple(b.x_train.shape) == (12, 1, 9, 7) and torch.equal(b.x_test, chw(exp["test"][0]))
    clear_cache()
    r = load(tmp_path, image_size=4)
    assert tuple(r.x_train.shape) == (12, 1, 4, 4) and tuple(r.x_test.shape) == (5, 1, 4, 4)


def test_tiny_imagenet_layout(tmp_path):
    wnids = ["n01443537", "n01629819"]
    train = {}
    for k, w in enumerate(wnids):
        arr = png_images(3, k, (8, 8, 3))
        for i, a in enumerate(arr):
            write_png(tmp_path / "train" / w / "images" / f"{w}_{i}.JPEG.png", a)
        (tmp_path / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
        train[w] = arr
    val = png_images(3, 9, (8, 8, 3))
    lines = []
    for i, (a, w) in enumerate(zip(val, [wnids[1], wnids[0], wnids[1]])):
        write_png(tmp_path / "val" / "images" / f"val_{i}.png", a)
        lines.append(f"val_{i}.png\t{w}\t0\t0\t7\t7")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    # Tiny-ImageNet's unlabelled test/ must not be used when val/ exists
    write_png(tmp_path / "test" / "images" / "test_0.png", val[0])
    b = load(tmp_path)
    assert b.y_train.tolist() == [0, 0, 0, 1, 1, 1] and b.y_test.tolist() == [1, 0, 1]
    assert torch.equal(b.x_test, chw(list(val)))


def test_mixed_grey_and_colour_become_rgb(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png", png_images(1, 0, (6, 6, 1))[0])
    write_png(tmp_path / "train" / "b" / "0.png", png_images(1, 1, (6, 6, 3))[0])
    grey = png_images(1, 2, (6, 6, 1))[0]
    write_png(tmp_path / "val" / "a" / "0.png", grey)
    b = load(tmp_path)
    assert tuple(b.x_train.shape) == (2, 3, 6, 6)
    assert torch.equal(b.x_test[0], torch.from_numpy(np.repeat(grey[None], 3, axis=0)))


def test_errors(tmp_path):
    with pytest.raises(DataError, match="no train/ folder"):
        load(tmp_path)
    write_folders(tmp_path)
    write_png(tmp_path / "val" / "emu" / "0.png", png_images(1, 0, (10, 10, 3))[0])
    with pytest.raises(DataError, match="val/ has class folders that train/ lacks: emu"):
        load(tmp_path)
    (tmp_path / "val" / "emu" / "0.png").unlink()
    (tmp_path / "val" / "emu").rmdir()
    write_png(tmp_path / "train" / "cat" / "big.png", png_images(1, 0, (12, 12, 3))[0])
    with pytest.raises(DataError, match="different sizes .*set data.image_size"):
        load(tmp_path)
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png' cannot be decoded"):
        load(tmp_path, image_size=10)


def test_cached_second_load(tmp_path, monkeypatch):
    write_folders(tmp_path)
    first = load(tmp_path)
    clear_cache()
    monkeypatch.setattr(imagefolder, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    assert torch.equal(load(tmp_path).x_train, first.x_train)


def test_two_rounds(tmp_path, tiny):
    write_folders(tmp_path / "imgs", shape=(10, 10, 3))
    cfg = tiny(
        model={"name": "simple-cnn"}, partition={"scheme": "iid", "n_parties": 2}, train={"epochs": 1, "batch_size": 4}
    )
    cfg["data"] = {"dataset": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 16}
    r = fedsim.run(cfg, out=tmp_path / "run")
    assert r.summary["status"] == "finished" and r.summary["rounds"] == 2
    assert r.summary["test_accuracy"] * 5 == pytest.approx(round(r.summary["test_accuracy"] * 5))


def test_listing_is_torchvisions(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    write_folders(tmp_path)
    write_png(tmp_path / "train" / "cat" / "deeper" / "b" / "z.png", png_images(1, 0, (10, 10, 3))[0])
    write_png(tmp_path / "train" / "cat" / "deeper" / "a.PNG", png_images(1, 1, (10, 10, 3))[0])
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    classes, entries = imagefolder.list_train(tmp_path)
    tv_classes, class_to_idx = find_classes(tmp_path / "train")
    assert imagefolder.IMG_EXTENSIONS == IMG_EXTENSIONS and classes == tv_classes
    assert [(p, k) for p, k, _, _ in entries] == make_dataset(
        str(tmp_path / "train"), class_to_idx, extensions=IMG_EXTENSIONS
    )
    assert len(entries) == 14


def _partition(tmp_path, root, capsys) -> tuple[int, list[str]]:
    """``fedsim partition`` of the image folder at ``root``: (exit code, stderr lines)."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump({"data": {"dataset": "imagefolder", "root": str(root)}, "partition": {"n_parties": 2}})
    )
    code = main(["partition", str(cfg), "--out", str(tmp_path / "p")])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_decompression_bomb_is_one_line(tmp_path, capsys):
    """A 60-byte PNG declaring 20000 x 20000 pixels: PIL's DecompressionBombError was a
    70-line traceback with exit 1."""
    write_folders(tmp_path / "d")
    (tmp_path / "d" / "train" / "cat" / "bomb.png").write_bytes(bomb_png())
    code, err = _partition(tmp_path, tmp_path / "d", capsys)
    assert code == 2 and len(err) == 1, err
    assert "bomb.png' is refused as a possible decompression bomb" in err[0] and "400000000 pixels" in err[0]
    assert not (tmp_path / "p").exists()


def test_a_fifo_with_an_image_name_is_skipped_not_waited_on(tmp_path, caplog):
    """A FIFO named pipe.png blocked the load forever (open() waits for a writer)."""
    exp = write_folders(tmp_path)
    fifo = tmp_path / "train" / "cat" / "pipe.png"
    os.mkfifo(fifo)
    with caplog.at_level("WARNING", logger="fedsim.data.imagefolder"):
        b = call_releasing_fifo(lambda: load(tmp_path), fifo)
    assert torch.equal(b.x_train, chw(exp["train"][0])) and b.y_train.tolist() == exp["train"][1]
    assert any("skipped 1 entry" in m and "pipe.png" in m and "not a regular file" in m for m in caplog.messages)


def test_an_image_that_is_not_a_regular_file_is_refused_not_read(tmp_path):
    from fedsim.data.images import open_image

    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(DataError, match="is not a regular file"):
        call_releasing_fifo(lambda: open_image(tmp_path / "x.png", "x.png"), tmp_path / "x.png")
