"""``ddnn export-triton``: write a Triton model repository (one model per split point) from a checkpoint."""

from __future__ import annotations

import argparse

from ddnn.paths import SHIPPED_CHECKPOINT


def parse_names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("export-triton", help="export cloud parts as a Triton model repository",
                       description="Export one Triton model per split point of a checkpoint: config.pbtxt, the "
                       "cloud part's ONNX graph (model.onnx) and, for the Python backend, model.py (ONNX Runtime), "
                       "plus repository.json mapping split points to models. Deterministic and idempotent; "
                       "see docs/triton.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=str(SHIPPED_CHECKPOINT),
                   help="checkpoint (its ONNX bundle: the one beside it, else exported) or an ONNX bundle directory")
    p.add_argument("-o", "--out", required=True, help="model repository directory")
    p.add_argument("--splits", type=parse_names,
                   help="split points, e.g. block4,block7,input (default: every early exit and input)")
    p.add_argument("--max-batch", type=int, default=256, help="max_batch_size of every model")
    p.add_argument("--kind", choices=["cpu", "gpu"], default="cpu", help="instance kind (KIND_CPU / KIND_GPU)")
    p.add_argument("--instances", type=int, default=1, help="model instances per model")
    p.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batcher's max queue delay")
    p.add_argument("--preferred-batch-sizes", type=parse_sizes, default=(32, 64, 128, 256),
                   help="batch sizes the dynamic batcher dispatches at once ('' for none)")
    p.add_argument("--threads", "--torch-threads", dest="threads", type=int, default=0,
                   help="ONNX Runtime threads per instance (0 = cores / instances)")
    p.add_argument("--platform", choices=["python", "onnxruntime"], default="python",
                   help="python: the Python backend running ONNX Runtime (what the nvidia-pytriton wheel serves); "
                   "onnxruntime: Triton's native onnxruntime_onnx backend (a full Triton, e.g. the NGC container; "
                   "TensorRT accelerator for --kind gpu)")
    p.add_argument("--name", help="model-name prefix (default: the checkpoint file's stem)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.triton.repository import ExportOptions, export_repository

    options = ExportOptions(max_batch_size=args.max_batch, kind=args.kind, instances=args.instances,
                            max_queue_delay_us=args.max_queue_delay_us,
                            preferred_batch_sizes=args.preferred_batch_sizes, threads=args.threads,
                            name=args.name, platform=args.platform)
    manifest = export_repository(args.checkpoint, args.out, args.splits, options)
    for split, info in manifest.models.items():
        print(f"{split}\t{info.model}\t{info.input.name} {info.input.dtype}{list(info.input.shape)}")
    return 0
