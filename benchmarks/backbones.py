"""Forward throughput of the named backbones on ready tensors (the feature-pass limit).

    python benchmarks/backbones.py                        # CPU, float32
    python benchmarks/backbones.py --device cuda --bf16 --channels-last

Prints images/s per backbone side by side and writes docs/backbone_throughput.md.
Weights do not change the speed, so the models are built with ``weights=none``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from landmark_tl.models.backbone import create_backbone

REPO = Path(__file__).resolve().parents[1]
BACKBONES = ("tf_efficientnet_lite0", "efficientnet_b0", "vgg16")


@torch.inference_mode()
def images_per_second(
    name: str, device: str, batch: int, batches: int, bf16: bool, channels_last: bool
) -> float:
    backbone = create_backbone(name, weights="none").eval().to(device)
    if channels_last:
        backbone.use_channels_last()
    x = torch.randint(0, 256, (batch, *backbone.preprocessing.input_size), dtype=torch.uint8)
    x = x.to(device)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        backbone(x)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            backbone(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "backbone_throughput.md")
    args = parser.parse_args()
    rows = []
    for name in BACKBONES:
        speed = images_per_second(
            name, args.device, args.batch, args.batches, args.bf16, args.channels_last
        )
        rows.append((name, speed))
        print(f"{name:<24} {speed:8.1f} images/s", flush=True)
    fastest = max(speed for _, speed in rows)
    setting = (
        f"{args.device}, batch {args.batch}, "
        + ("bf16" if args.bf16 else "float32")
        + (", channels_last" if args.channels_last else "")
    )
    lines = [
        "# Backbone forward throughput",
        "",
        f"`python benchmarks/backbones.py` on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; {setting}; "
        "ready uint8 tensors at each model's timm input size, normalisation included.",
        "",
        "| backbone | images/s | relative to fastest |",
        "|---|--:|--:|",
        *(f"| {name} | {speed:.1f} | {speed / fastest:.2f} |" for name, speed in rows),
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
