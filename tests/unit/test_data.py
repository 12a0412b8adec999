import hashlib

import numpy as np
import pytest
from PIL import Image

from ddnn.data import (
    DatasetError,
    detect_layout,
    download_cifar,
    load_split,
    random_crop_flip,
    read_pack,
    to_tensor,
    train_val_split,
    write_pack,
)
from ddnn.data.layouts import read_imagefolder


def test_cifar10_pickle_layout_roundtrip(cifar10_pickles):
    assert detect_layout(cifar10_pickles.parent)[0] == "cifar10-pickle"
    train = load_split(cifar10_pickles.parent, "train")
    test = load_split(cifar10_pickles, "test")
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8
    assert len(test) == 8 and test.classes[3] == "class3" and train.name == "cifar10"
    # Channel-planar pickle rows become HWC: pixel (0,0) of image 0 is (R[0], G[0], B[0]).
    import pickle
    with open(cifar10_pickles / "test_batch", "rb") as f:
        raw = pickle.load(f)["data"][0]
    assert tuple(test.images[0, 0, 0]) == (raw[0], raw[1024], raw[2048])


def test_cifar100_pickle_layout(cifar100_pickles):
    assert detect_layout(cifar100_pickles.parent)[0] == "cifar100-pickle"
    arrays = load_split(cifar100_pickles.parent, "train")
    assert arrays.num_classes == 100 and arrays.name == "cifar100"
    assert list(arrays.labels[:3]) == [0, 7, 14]


def test_imagefolder_layout_and_pack_are_pixel_identical(imagefolder, tmp_path):
    assert detect_layout(imagefolder)[0] == "imagefolder"
    direct = read_imagefolder(imagefolder, "test")
    meta = write_pack(imagefolder, "test", tmp_path / "t.npz")
    assert meta["count"] == 12 and meta["classes"] == ["cat", "dog", "ship"]
    packed = read_pack(tmp_path / "t.npz", "test")
    assert np.array_equal(direct.images, packed.images)
    assert np.array_equal(direct.labels, packed.labels)


def test_val_pack_holds_exactly_the_images_training_holds_out(imagefolder, tmp_path):
    train = read_imagefolder(imagefolder, "train")
    _, val = train_val_split(train.labels, 0.25, 3)
    meta = write_pack(imagefolder, "val", tmp_path / "v.npz", val_fraction=0.25, split_seed=3)
    assert meta["split"] == "val" and meta["count"] == len(val) == 3
    assert meta["held_out"] == {"of": "train", "val_fraction": 0.25, "split_seed": 3}
    packed = read_pack(tmp_path / "v.npz", "val")
    assert np.array_equal(packed.images, train.images[val]) and np.array_equal(packed.labels, train.labels[val])
    with pytest.raises(DatasetError, match="'val' split"):
        load_split(tmp_path / "v.npz", "train")


def test_cache_is_used_on_second_load(imagefolder, monkeypatch):
    first = load_split(imagefolder, "train")

    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr("ddnn.data.loading._read", boom)
    second = load_split(imagefolder, "train")
    assert np.array_equal(first.images, second.images)


def test_cache_invalidated_when_files_change(imagefolder):
    first = load_split(imagefolder, "train")
    target = sorted((imagefolder / "train" / "cat").iterdir())[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(target)
    second = load_split(imagefolder, "train")
    assert not np.array_equal(first.images[0], second.images[0])
    assert second.images[0].max() == 0


@pytest.mark.parametrize("make_bad, expect", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "no recognised dataset layout"),
    (lambda p: (p.write_text("x"), p)[1], "not a ddnn pack"),
])
def test_missing_or_unknown_layout_names_path_and_layouts(tmp_path, make_bad, expect):
    path = make_bad(tmp_path / "nothing")
    with pytest.raises(DatasetError) as err:
        load_split(path, "test")
    msg = str(err.value)
    assert str(path) in msg and expect in msg and "ImageFolder" in msg and "cifar-10-batches-py" in msg


def test_corrupt_image_names_the_file(imagefolder):
    bad = imagefolder / "test" / "dog" / "0001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"0001\.png"):
        load_split(imagefolder, "test")


def test_wrong_image_size_is_rejected(imagefolder):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(imagefolder / "test" / "cat" / "0000.png")
    with pytest.raises(DatasetError, match="expected 32x32"):
        load_split(imagefolder, "test")


def test_truncated_pickle_names_the_file(cifar10_pickles):
    (cifar10_pickles / "test_batch").write_bytes(b"\x80\x04junk")
    with pytest.raises(DatasetError, match="test_batch"):
        load_split(cifar10_pickles, "test")


def test_pack_checksum_detects_corruption(imagefolder, tmp_path):
    out = tmp_path / "p.npz"
    write_pack(imagefolder, "test", out)
    data = dict(np.load(out))
    data["blobs"] = data["blobs"].copy()
    data["blobs"][100] ^= 0xFF
    np.savez(out, **data)
    with pytest.raises(DatasetError, match="checksum"):
        read_pack(out)


def test_train_val_split_is_deterministic_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    a_tr, a_val = train_val_split(labels, 0.1, seed=3)
    b_tr, b_val = train_val_split(labels, 0.1, seed=3)
    assert np.array_equal(a_val, b_val) and np.array_equal(a_tr, b_tr)
    assert len(a_val) == 50 and np.all(np.bincount(labels[a_val]) == 5)
    assert not set(a_tr) & set(a_val) and len(a_tr) + len(a_val) == 500
    _, c_val = train_val_split(labels, 0.1, seed=4)
    assert not np.array_equal(a_val, c_val)


def test_download_verifies_checksum_and_unpacks(cifar10_tarball, tmp_path):
    md5 = hashlib.md5(cifar10_tarball.read_bytes()).hexdigest()
    folder = download_cifar("cifar10", tmp_path / "dl", url=cifar10_tarball.as_uri(), md5=md5, progress=False)
    assert folder.name == "cifar-10-batches-py"
    assert len(load_split(tmp_path / "dl", "train")) == 30
    # A second call finds the verified archive and does not fetch again.
    cifar10_tarball.unlink()
    assert download_cifar("cifar10", tmp_path / "dl", url=cifar10_tarball.as_uri(), md5=md5, progress=False) == folder


def test_download_rejects_checksum_mismatch(cifar10_tarball, tmp_path):
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_cifar("cifar10", tmp_path / "dl", url=cifar10_tarball.as_uri(), md5="0" * 32, progress=False)
    assert not any((tmp_path / "dl").iterdir())


def test_download_failure_names_the_url(tmp_path):
    url = (tmp_path / "absent.tar.gz").as_uri()
    with pytest.raises(DatasetError, match=r"absent\.tar\.gz"):
        download_cifar("cifar100", tmp_path / "dl", url=url, progress=False)


def test_augmentation_shape_and_identity_without_padding():
    import torch

    x = to_tensor(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    g = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, g, padding=0)
    for i in range(16):  # each sample is either itself or its mirror image
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2))
    z = random_crop_flip(x, torch.Generator().manual_seed(1), padding=4)
    assert z.shape == x.shape and not torch.equal(z, x)
