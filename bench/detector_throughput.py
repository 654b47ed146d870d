"""Detector training throughput (images/s) per backbone and precision, on synthetic images.

    python -m bench.detector_throughput --device cuda --precision no --tag h200     # three backbones, fp32
    python -m bench.detector_throughput --device cuda --precision bf16 --tag h200   # ... bf16, into the same file

Each entry is ``BACKBONE@SIZE``: the backbone is trained from scratch by ``Detector.fit`` (the real loop: augmentation
off, autocast under ``--precision bf16``) on N 1-channel images of that size, N/2 real and N/2 fake. The first epoch
is a warm-up (kernel selection, allocator); the figure is the images/s of the epochs after it, timed by a second
``fit`` that continues from the first one's weights. One precision per process (accelerate's state is set once);
runs with the same tag are merged into bench/results/detector_throughput-TAG.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

if not __package__:  # as a file, bench/ comes first on sys.path and bench/detectors.py shadows the package
    raise SystemExit("run it from the repository root as a module: python -m bench.detector_throughput")

import torch  # noqa: E402

from detectors.detector import Detector  # noqa: E402
from guardgen.checkpoint import load_json, save_json  # noqa: E402
from guardgen.utils import machine_info  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def measure(backbone: str, size: int, *, n: int, epochs: int, batch_size: int, device: str, precision: str) -> dict:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(n // 2, 1, size, size, generator=g), torch.rand(n // 2, 1, size, size, generator=g)
    det = Detector(backbone=backbone, epochs=1, batch_size=batch_size, device=device, mixed_precision=precision)
    det.fit(real, fake)  # warm-up epoch
    det.epochs, det.warm_start = epochs, True
    det.fit(real, fake)
    return {"images_per_second": round(det.train_images_per_second_, 1), "seconds": round(det.train_seconds_, 2),
            "images": n * epochs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["guardgen_digitnet@16", "resnet50@64", "vit_small_patch16_224@224"])
    ap.add_argument("--precision", default="no", help="no | fp16 | bf16 (accelerate's mixed_precision)")
    ap.add_argument("--n", type=int, default=4096, help="images per epoch (half real, half fake)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up one")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    path = RESULTS / f"detector_throughput-{args.tag}.json"
    out = {"what": __doc__.splitlines()[0], "machine": machine_info(), "results": {}, "args": {}}
    if path.is_file():
        earlier = load_json(path)
        out["results"], out["args"] = earlier.get("results", {}), earlier.get("args", {})
    out["args"][args.precision] = vars(args)
    for entry in args.backbones:
        name, size = entry.split("@")
        r = measure(name, int(size), n=args.n, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                    precision=args.precision)
        out["results"].setdefault(args.precision, {})[entry] = r
        print(f"{args.precision:>4} {entry:<28} {r['images_per_second']:>10.1f} images/s", flush=True)
        save_json(out, path)


if __name__ == "__main__":
    main()
