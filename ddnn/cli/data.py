"""``ddnn data``: inspect, pack and download datasets."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect, pack or download datasets",
                       description="Dataset utilities. Layouts: CIFAR pickles, ImageFolder trees, ddnn packs.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = dsub.add_parser("info", help="detect the layout of a dataset path and count its images")
    info.add_argument("path")
    info.add_argument("--split", default="test", choices=["train", "test"])
    info.set_defaults(func=run_info)

    pack = dsub.add_parser("pack", help="pack one split of an ImageFolder tree into one .npz",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pack.add_argument("root")
    pack.add_argument("--split", default="test", choices=["train", "test", "val"],
                      help="val: the validation images training holds out of the train split")
    pack.add_argument("--val-fraction", type=float, default=0.1, help="with --split val: as in ddnn train")
    pack.add_argument("--split-seed", type=int, default=0, help="with --split val: as in ddnn train")
    pack.add_argument("-o", "--out", required=True)
    pack.set_defaults(func=run_pack)

    dl = dsub.add_parser("download", help="download and verify the canonical CIFAR tarball",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    dl.add_argument("name", choices=["cifar10", "cifar100"])
    dl.add_argument("-o", "--dest", default="datasets")
    dl.add_argument("--url", help="mirror URL (http(s):// or file://)")
    dl.add_argument("--md5", help="expected MD5 when using a different archive")
    dl.set_defaults(func=run_download)


def run_info(args) -> int:
    from ddnn.data import detect_layout, load_split

    layout, path = detect_layout(args.path)
    arrays = load_split(args.path, args.split)
    counts = {c: int((arrays.labels == i).sum()) for i, c in enumerate(arrays.classes)}
    print(json.dumps({"path": str(path), "layout": layout, "name": arrays.name, "split": args.split,
                      "images": len(arrays), "classes": counts}, indent=2))
    return 0


def run_pack(args) -> int:
    from ddnn.data import write_pack

    meta = write_pack(args.root, args.split, args.out, val_fraction=args.val_fraction, split_seed=args.split_seed)
    print(json.dumps(meta, indent=2))
    return 0


def run_download(args) -> int:
    from ddnn.data import download_cifar

    print(download_cifar(args.name, args.dest, url=args.url, md5=args.md5))
    return 0
