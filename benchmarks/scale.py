"""Memory and setup cost against the number of images (issue 13), at 1k, 10k and 100k.

    python benchmarks/scale.py                        # 1k, 10k, 100k; writes docs/benchmarks.md
    python benchmarks/scale.py --sizes 1000 10000     # some sizes only
    python benchmarks/scale.py --work /big/disk       # where the data sets and caches go

Each size is a data set of unique 640x480 JPEG photos in 4 categories x 5 landmarks. They
are made cheaply: 32 generated photos, each copy made unique by a JPEG comment holding its
number (unique bytes, so unique content digests; decoding costs what a photo costs). The
backbone is timm's small random ``test_convnext`` at 32 px, so that the framework's own
cost shows. Each mode runs in its own process, so its peak RSS is its own:

- **cold**: ``prepare_data`` with empty catalog index and feature store (every file read,
  hashed and its header checked, then the streaming feature pass: the one full decode);
- **warm**: a whole training run (multi_output, 2 epochs, test) with both filled;
- **finetune**: a run with ``backbone.freeze=none``: one epoch over the whole data set,
  cut at 30 steps, then validation and test cut at 30 batches each (2 cores cannot
  fine-tune 100k images in a benchmark; memory depends on the data set held, not on the
  steps taken);
- **bare**: PIL decode to the model's geometry (``load_rgb`` and the resize + crop every
  image needs) of the same files (a sample of up to 3,000) in the same number of
  DataLoader workers: the limit the cold pass's throughput is measured against.

Goals: peak RSS at 100k <= 1.2x the 1k figure in every mode; warm-run setup <= 100 us per
image; cold-pass throughput >= 0.85x bare decode; few cache files per 1k images.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from doc_section import replace_section

REPO = Path(__file__).resolve().parents[1]
SIZES = (1000, 10_000, 100_000)
CATEGORIES, LANDMARKS = 4, 5
BASES = 32


def generate(root: Path, count: int) -> Path:
    """``count`` unique decodable 640x480 JPEGs under ``root/C<c>/L<l>/``; reused if there."""
    done = root / ".complete"
    if done.is_file():
        return root
    from PIL import Image

    rng = np.random.default_rng(0)
    bases = []
    for _ in range(BASES):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((640, 480), Image.BICUBIC)
        grain = rng.normal(0, 6, (480, 640, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=88)
        bases.append(buffer.getvalue())
    past = time.time() - 86400  # photos are not fresh: their mtime is a day old
    for i in range(count):
        c, lm = i % CATEGORIES, (i // CATEGORIES) % LANDMARKS
        folder = root / f"C{c}" / f"L{c}-{lm}"
        folder.mkdir(parents=True, exist_ok=True)
        base = bases[i % BASES]
        comment = f"landmark_tl scale benchmark image {i}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        path = folder / f"{i:07d}.jpg"
        path.write_bytes(base[:2] + segment + base[2:])  # after SOI: a COM segment
        os.utime(path, (past, past))
    done.write_text(str(count))
    return root


def overrides(root: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "data=folder",
        f"data.root={root}",
        f"paths.cache_dir={cache}",
        f"paths.output_dir={out}",
        "backbone.name=test_convnext",
        "backbone.weights=none",
        "backbone.input_size=[3,32,32]",
        "trainer=cpu",
        "data.batch_size=64",
        "strategy=multi_output",
        "strategy.stages.joint.epochs=2",
        *extra,
    ]


def _peak() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rss_mib": round(own, 1), "worker_rss_mib": round(workers, 1)}


def mode_cold(root: Path, work: Path) -> dict:
    from landmark_tl.config.schema import compose
    from landmark_tl.data import datamodule
    from landmark_tl.training.build import prepare_data

    cache = work / "cache"
    timed = {}
    fill = datamodule.fill_store

    def timed_fill(*args, **kwargs):
        start = time.perf_counter()
        result = fill(*args, **kwargs)
        timed["pass_s"] = time.perf_counter() - start
        timed["pass_images"] = result.images
        return result

    datamodule.fill_store = timed_fill
    start = time.perf_counter()
    _, dm = prepare_data(compose(overrides(root, cache, work / "out")))
    total = time.perf_counter() - start
    files = [p for p in cache.rglob("*") if p.is_file()]
    return {
        "setup_s": round(total, 2),
        "pass_s": round(timed["pass_s"], 2),
        "pass_img_s": round(timed["pass_images"] / timed["pass_s"], 1),
        "workers": dm.num_workers,
        "cache_files": len(files),
    }


def mode_warm(root: Path, work: Path) -> dict:
    from landmark_tl.config.schema import compose
    from landmark_tl.training.run import train

    config = compose(overrides(root, work / "cache", work / "out"))
    metrics = train(config, work / "out" / f"warm-{time.time_ns()}")
    return {"setup_s": metrics["timings"]["setup_s"], "total_s": metrics["timings"]["total_s"]}


def mode_finetune(root: Path, work: Path) -> dict:
    from landmark_tl.config.schema import compose
    from landmark_tl.training.run import train

    config = compose(
        overrides(
            root,
            work / "cache",
            work / "out",
            "backbone.freeze=none",
            "strategy.stages.joint.epochs=1",
            "+trainer.limit_train_batches=30",
            "+trainer.limit_val_batches=30",
            "+trainer.limit_test_batches=30",
        )
    )
    metrics = train(config, work / "out" / f"finetune-{time.time_ns()}")
    return {"train_s": metrics["timings"]["train_s"], "total_s": metrics["timings"]["total_s"]}


class _Decode:
    def __init__(self, paths: list[Path], geometry) -> None:
        self.paths, self.geometry = paths, geometry

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        from landmark_tl.data.decode import load_rgb

        return self.geometry(load_rgb(self.paths[i])).size[0]


def mode_bare(root: Path, work: Path) -> dict:
    from torch.utils.data import DataLoader

    from landmark_tl.config.schema import compose
    from landmark_tl.data.datamodule import default_workers
    from landmark_tl.data.transforms import geometry_transform
    from landmark_tl.training.build import build_backbone

    config = compose(overrides(root, work / "cache", work / "out"))
    geometry = geometry_transform(build_backbone(config).preprocessing)
    paths = sorted(root.rglob("*.jpg"))
    sample = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:3000]]
    workers = default_workers()
    loader = DataLoader(_Decode(sample, geometry), batch_size=16, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    seconds = time.perf_counter() - start
    return {"bare_img_s": round(len(sample) / seconds, 1), "workers": workers}


MODES = {"cold": mode_cold, "warm": mode_warm, "finetune": mode_finetune, "bare": mode_bare}


def run_mode(mode: str, root: Path, work: Path) -> dict:
    """``mode`` in a fresh process: its figures and its own peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--mode", mode, "--root", str(root), "--work", str(work)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(size: int, base: Path) -> dict:
    root = generate(base / f"data-{size}", size)
    work = base / f"work-{size}"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    figures = {"images": size}
    for mode in ("bare", "cold", "warm", "finetune"):
        figures[mode] = run_mode(mode, root, work)
        print(json.dumps({"size": size, mode: figures[mode]}), flush=True)
    return figures


def table(results: list[dict]) -> str:
    first = results[0]
    lines = [
        "| images | cold pass: peak RSS (workers) | warm run: peak RSS | fine-tune epoch: peak "
        "RSS (workers) | warm setup per image | cold pass / bare decode | cache files per 1k |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        ratio = r["cold"]["pass_img_s"] / r["bare"]["bare_img_s"]
        rss = {m: r[m]["rss_mib"] / first[m]["rss_mib"] for m in ("cold", "warm", "finetune")}
        lines.append(
            f"| {r['images']:,} "
            f"| {r['cold']['rss_mib']:.0f} MiB ({r['cold']['worker_rss_mib']:.0f}) "
            f"x{rss['cold']:.2f} "
            f"| {r['warm']['rss_mib']:.0f} MiB x{rss['warm']:.2f} "
            f"| {r['finetune']['rss_mib']:.0f} MiB ({r['finetune']['worker_rss_mib']:.0f}) "
            f"x{rss['finetune']:.2f} "
            f"| {1e6 * r['warm']['setup_s'] / r['images']:.0f} µs "
            f"| {r['cold']['pass_img_s']:.0f} / {r['bare']['bare_img_s']:.0f} img/s = {ratio:.2f} "
            f"| {1000 * r['cold']['cache_files'] / r['images']:.2f} |"
        )
    return "\n".join(lines)


def write_doc(results: list[dict], seconds: float) -> None:
    import torch

    section = "\n".join(
        [
            "## Scale: memory and setup against the number of images (`make bench-scale`)",
            "",
            f"Measured by `python benchmarks/scale.py` on {platform.machine()}, "
            f"{os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}; {seconds:.0f} s in all. Unique 640x480 JPEGs, "
            "backbone test_convnext (random) at 32 px; fine-tuning cut at 30 steps (and 30 "
            "validation and test batches). xN: peak "
            "RSS against the smallest size (goal <= 1.2 at 100k); warm setup: scan through "
            "the index, split, fingerprint, data report and feature rows located (goal <= "
            "100 µs); cold pass / bare decode: images/s of the feature pass against PIL "
            "decode to the model's geometry in the same number of workers (goal >= 0.85).",
            "",
            table(results),
            "",
            "Raw figures:",
            "",
            "```json",
            json.dumps(results, indent=1),
            "```",
        ]
    )
    replace_section(REPO / "docs" / "benchmarks.md", "scale", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/landmark_tl-scale"))
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    if args.mode:
        figures = MODES[args.mode](args.root, args.work)
        print(json.dumps({**figures, **_peak()}))
        return
    start = time.perf_counter()
    results = []
    for size in args.sizes:  # in the order given: the smallest first, it is the reference
        results.append(measure(size, args.work))
        write_doc(results, time.perf_counter() - start)  # what finished is kept
    print(table(results))


if __name__ == "__main__":
    main()
