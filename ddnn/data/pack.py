"""ddnn pack files: one split of an image dataset in a single compact ``.npz``.

The pack stores each image's encoded bytes (JPEG or PNG) back to back, their offsets, the
labels and the class names. For CIFAR-10 stored as JPEG this is ~9 MB for the test split,
against 30 MB of raw pixels, and decoding it gives exactly the pixels of the source files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ddnn.data.arrays import ImageArrays
from ddnn.data.errors import DatasetError
from ddnn.data.layouts import decode_images, guess_name, list_imagefolder
from ddnn.data.splits import train_val_split

PACK_FORMAT = "ddnn.pack/v1"
VAL_SPLIT = "val"  # the validation images held out of the train split


def write_pack(root: Path, split: str, out: Path, name: str | None = None, val_fraction: float = 0.1,
               split_seed: int = 0) -> dict:
    """Pack one split of an ImageFolder tree into ``out``; return its metadata.

    ``split`` ``val`` packs the validation images training holds out of the train split
    (:func:`~ddnn.data.splits.train_val_split` with ``val_fraction`` and ``split_seed``, the same
    images in the same order), so a machine without the training set can still re-measure what
    calibration measured.
    """
    classes, files, labels = list_imagefolder(Path(root), "train" if split == VAL_SPLIT else split)
    held_out = None
    if split == VAL_SPLIT:
        _, val = train_val_split(labels, val_fraction, split_seed)
        files, labels = [files[i] for i in val], labels[val]
        held_out = {"of": "train", "val_fraction": val_fraction, "split_seed": split_seed}
    blobs = [f.read_bytes() for f in files]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    payload = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    meta = {
        "format": PACK_FORMAT,
        "name": name or guess_name(classes),
        "split": split,
        "classes": list(classes),
        "count": len(blobs),
        "sha256": hashlib.sha256(payload.tobytes()).hexdigest(),
        "source": "imagefolder",
    }
    if held_out:
        meta["held_out"] = held_out
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.savez(f, blobs=payload, offsets=offsets, labels=labels, meta=np.array(json.dumps(meta)))
    return meta


def read_pack_meta(path: Path) -> dict:
    """The metadata of a pack file, without decoding images."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(path, f"not a readable ddnn pack ({exc})") from None
    if meta.get("format") != PACK_FORMAT:
        raise DatasetError(path, f"pack format {meta.get('format')!r}, expected {PACK_FORMAT!r}")
    return meta


def read_pack(path: Path, split: str | None = None) -> ImageArrays:
    """Decode a pack file. ``split``, when given, must match the pack's split."""
    path = Path(path)
    meta = read_pack_meta(path)
    if split is not None and split != meta["split"]:
        raise DatasetError(path, f"pack holds the '{meta['split']}' split, '{split}' was asked for")
    with np.load(path, allow_pickle=False) as z:
        blobs, offsets, labels = z["blobs"], z["offsets"], z["labels"].astype(np.int64)
    if hashlib.sha256(blobs.tobytes()).hexdigest() != meta["sha256"]:
        raise DatasetError(path, "checksum mismatch: the pack is corrupt")
    data = blobs.tobytes()
    chunks = [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    images = decode_images(chunks, [f"{path}[{i}]" for i in range(len(chunks))])
    return ImageArrays(images, labels, tuple(meta["classes"]), meta["name"], meta["split"], str(path))
