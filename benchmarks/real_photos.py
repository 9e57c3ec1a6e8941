"""Real-photo benchmark: Fashion-MNIST product photos as a two-level tree, over 5 splits.

    python benchmarks/real_photos.py            # writes docs/real_photos.md
    python benchmarks/real_photos.py --quick    # 2 split seeds, 10 photos per item: a try-out

Finds the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``;
``apt-get install -y dataset-fashion-mnist`` when it is missing and we are root), writes
``<root>/<Category>/<Item>/<n>.png`` from the first photos of each item in its train file,
then trains every candidate approach of ``experiment=recommend`` on every split seed
through the project's own CLI (one Hydra multirun, or ``--jobs N`` single runs side by
side) and compares them with ``landmark_tl.report`` (pooled over the splits, paired tests
against the linear probe, Holm-corrected, and the report's recommendation chosen on
validation). The Markdown table, the recommendation, the commands, the machine and the wall
time go into ``docs/real_photos.md`` between markers, so the sections written by hand (how
the fine-tuning preset was chosen) stay.

Not a CI test: about an hour on a 2-core CPU (docs/real_photos.md).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_section import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
PACKAGE = "dataset-fashion-mnist"
# Fashion-MNIST's ten labels in their index order, and the two-level tree made of them:
# what a shop's catalogue would call the garment's department.
ITEMS = (
    "T-shirt-top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
TREE = {
    "Tops": ("T-shirt-top", "Pullover", "Coat", "Shirt"),
    "Bottoms and dresses": ("Trouser", "Dress"),
    "Footwear": ("Sandal", "Sneaker", "Ankle boot"),
    "Bags": ("Bag",),
}
# The candidates are those a user's `experiment=recommend` runs (one list, in its YAML).
RECOMMEND = REPO / "landmark_tl" / "conf" / "experiment" / "recommend.yaml"
SPLIT_SEEDS = (0, 1, 2, 3, 4)
# The photos' own 28 px, padded by resizing to 32 px: BiT upscales small images (to 128 px),
# but on a shared 2-core CPU a fine-tuning run at 64 px took minutes per epoch; every
# candidate sees the same size (EfficientNet-Lite0 then ends on a 1x1 feature map).
INPUT_SIZE = 32
COMMON = [
    "data=folder",
    "data.split.val=0.2",
    "data.split.test=0.3",
    "trainer=cpu",
    f"backbone.input_size=[3,{INPUT_SIZE},{INPUT_SIZE}]",
    "extras.plots=false",
]


def dataset_dir() -> Path:
    """The package's folder, installing the package when it is missing (as root)."""
    if not (DATASET_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            sys.exit(f"{DATASET_DIR} is missing: run `sudo apt-get install -y {PACKAGE}`")
        subprocess.run(["apt-get", "install", "-y", PACKAGE], check=True)
    return DATASET_DIR


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): uint8 images (N, 28, 28) or labels (N,)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_tree(root: Path, per_item: int) -> Path:
    """``root/<Category>/<Item>/<index>.png``: the first ``per_item`` photos of each item
    in the train file (kept when already written with the same count)."""
    marker = root / f".complete-{per_item}"
    if marker.is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    source = dataset_dir()
    images = read_idx(source / "train-images-idx3-ubyte.gz")
    labels = read_idx(source / "train-labels-idx1-ubyte.gz")
    category_of = {item: category for category, items in TREE.items() for item in items}
    for label, item in enumerate(ITEMS):
        folder = root / category_of[item] / item
        folder.mkdir(parents=True)
        for index in np.flatnonzero(labels == label)[:per_item]:
            Image.fromarray(images[index]).convert("RGB").save(folder / f"{index}.png")
    marker.touch()
    return root


def recommend_candidates() -> list[str]:
    """The `+approach` names swept by ``experiment=recommend``."""
    params = yaml.safe_load(RECOMMEND.read_text(encoding="utf-8"))["hydra"]["sweeper"]["params"]
    return str(params["+approach"]).split(",")


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO, env=env)


def run_side_by_side(common: list[str], args: argparse.Namespace, sweep: Path) -> None:
    """Every (candidate, split seed) as its own run in ``sweep``, ``args.jobs`` at a time,
    each with an equal share of the CPU threads; the slowest candidates (fine-tuning,
    listed last) start first so that the pool ends together."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.jobs))}
    pairs = list(itertools.product(reversed(args.candidates), args.seeds))

    def one(pair: tuple[str, int]) -> None:
        approach, seed = pair
        overrides = [f"+approach={approach}", f"data.split.seed={seed}"]
        run([*common, *overrides, f"hydra.run.dir={sweep}/{approach}-split{seed}"], env)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, pairs))


def tree_lines() -> list[str]:
    return [f"- **{category}**: {', '.join(items)}" for category, items in TREE.items()]


def elapsed_minutes(sweep: Path) -> float:
    """Wall time of the runs in ``sweep``: first run dir created to last metrics.json."""
    runs = [p.parent for p in sweep.rglob("metrics.json")]
    begin = min((r / "config.yaml").stat().st_mtime for r in runs)
    return (max((r / "metrics.json").stat().st_mtime for r in runs) - begin) / 60


def document(sweep: Path, args: argparse.Namespace, command: list[str], load: float) -> None:
    """Report ``sweep`` and write its section of ``args.doc``."""
    run([sys.executable, "-m", "landmark_tl.report", f"runs={sweep}", f"out={sweep}"])
    table = (sweep / "table1.md").read_text(encoding="utf-8")
    parallel = f", {args.jobs} runs side by side" if args.jobs > 1 else ""
    wall = elapsed_minutes(sweep)
    body = "\n".join(
        [
            f"Tree ({len(ITEMS)} items in {len(TREE)} categories, {args.per_item} photos per "
            f"item from Fashion-MNIST's train file, 28 px grey resized to {INPUT_SIZE} px):",
            "",
            *tree_lines(),
            "",
            "Command (then `python -m landmark_tl.report runs=<sweep dir>`):",
            "",
            "```",
            "python " + " ".join(command[1:]),
            "```",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
            f"1-minute load average at the start {load:.1f}. Wall time of the training runs: "
            f"{wall:.1f} min ({len(args.candidates)} candidates x {len(args.seeds)} split "
            f"seeds{parallel}).",
            "",
            table,
        ]
    )
    replace_section(args.doc, f"real-photos-{args.per_item}", body)
    print(f"wrote {args.doc} ({wall:.1f} min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "real_photos")
    parser.add_argument("--per-item", type=int, default=30, help="photos per item")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SPLIT_SEEDS))
    parser.add_argument("--candidates", nargs="+", default=recommend_candidates())
    parser.add_argument(
        "--jobs", type=int, default=1, help="single runs side by side instead of one multirun"
    )
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "real_photos.md")
    parser.add_argument("--quick", action="store_true", help="10 photos per item, 2 seeds")
    parser.add_argument(
        "--sweep", type=Path, help="only report and document this finished sweep dir"
    )
    args = parser.parse_args()
    if args.quick:
        args.per_item, args.seeds = 10, args.seeds[:2]
    root = write_tree(args.out / f"fashion-mnist-{args.per_item}", args.per_item)
    sweep = args.sweep or args.out / f"multirun-{args.per_item}-{time.strftime('%Y%m%d-%H%M%S')}"
    common = [sys.executable, "-m", "landmark_tl.train", *COMMON, f"data.root={root}"]
    train = [
        *common[:3],
        "-m",
        *common[3:],
        f"+approach={','.join(args.candidates)}",
        f"data.split.seed={','.join(map(str, args.seeds))}",
        f"hydra.sweep.dir={sweep}",
    ]
    load = os.getloadavg()[0]
    if args.sweep is None and args.jobs > 1:
        run_side_by_side(common, args, sweep)
    elif args.sweep is None:
        run(train)
    document(sweep, args, train, load)


if __name__ == "__main__":
    main()
