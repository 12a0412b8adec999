"""``ddnn export-onnx``: write an ONNX bundle (edge graphs, cloud graphs, manifest) from a checkpoint."""

from __future__ import annotations

import argparse

from ddnn.paths import SHIPPED_CHECKPOINT


def register(sub) -> None:
    p = sub.add_parser("export-onnx", help="export edge and cloud parts as ONNX (a bundle directory)",
                       description="Export the edge part up to every split point (uint8 images -> every edge "
                       "exit's logits + the features handed over) and the cloud part from every split point "
                       "(features, or raw pixels for split 'input' -> final logits) as ONNX graphs, plus "
                       "manifest.json. With --int8, also int8 edge graphs (static QDQ quantization calibrated "
                       "on training-split images). See docs/engines.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=str(SHIPPED_CHECKPOINT), help="checkpoint to export")
    p.add_argument("-o", "--out", required=True, help="bundle directory")
    p.add_argument("--principal", metavar="CHECKPOINT", default=None,
                   help="Lo et al.'s arrangement: CHECKPOINT is the auxiliary (edge) network and this the principal "
                   "network in the cloud, fed the raw input")
    p.add_argument("--int8", action="store_true", help="also write int8 edge graphs (edge-<split>.int8.onnx)")
    p.add_argument("--calibration-data", default=None,
                   help="training data for int8 calibration (default: the source recorded in the checkpoint, else "
                   "$DDNN_TRAIN_DATA or ../shared/datasets/cifar10-jpeg); only its training split is read")
    p.add_argument("--calibration-samples", type=int, default=512, help="training images int8 calibration reads")
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.export.onnx import export_bundle

    bundle = export_bundle(args.checkpoint, args.out, principal=args.principal)
    if args.int8:
        from ddnn.export.quantize import quantize_bundle

        bundle = quantize_bundle(bundle, args.checkpoint, data=args.calibration_data,
                                 samples=args.calibration_samples)
    for split, g in bundle.edges.items():
        print(f"edge\t{split}\texits {','.join(g.exits)}\t{' '.join(g.files.values())}")
    for split, c in bundle.clouds.items():
        print(f"cloud\t{split}\t{c.input_name} {c.input_dtype}{list(c.input_shape)}\t{c.file}")
    return 0
