"""Issue 11: special files are never opened, files honour the umask, and the command lines
print known errors as their message alone (exit 1; usage 2), never with a traceback."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from landmark_tl.commands.doctor import main as doctor_main
from landmark_tl.commands.export import main as export_main
from landmark_tl.commands.predict import main as predict_main
from landmark_tl.config.schema import ConfigError, validate_config
from landmark_tl.core.errors import UsageError, hydra_command, take_debug_flag
from landmark_tl.core.io import atomic_write_text
from landmark_tl.data.catalog import scan_image_folder
from landmark_tl.data.datamodule import ImageDecoder
from landmark_tl.data.decode import load_rgb
from landmark_tl.data.features.store import FeatureStore, FeatureStoreError
from landmark_tl.data.records import CatalogError
from landmark_tl.data.splits import SplitError, read_split_csv, write_split_csv
from landmark_tl.data.synthetic.generate import ensure_synthetic_dataset
from landmark_tl.models.backbone import create_backbone
from landmark_tl.serving.inference import image_files
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, compose_config
from tests.training.test_faults import _tree

FIFO = "not a regular file (FIFO)"


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, failing (not hanging) if it blocks, e.g. opening a FIFO."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test below
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)  # a blocked daemon cannot hold pytest
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for over {seconds} s (a special file was opened?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _clean_error(err: str, *needles: str) -> None:
    """stderr holds the message (with every needle) and no traceback."""
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


# --- only regular files are opened ------------------------------------------------------


def test_fifo_in_the_tree_is_reported_never_opened(tmp_path):
    root = _tree(tmp_path)
    os.mkfifo(root / "Gothic" / "A" / "x.png")
    os.mkfifo(root / "Gothic" / "stray.png")  # at the wrong depth as well
    catalog = _within(60, lambda: scan_image_folder(root))
    reasons = {p.path.name: p.reason for p in catalog.problems}
    assert FIFO in reasons["x.png"] and FIFO in reasons["stray.png"]
    assert len(catalog.records) == 12


def test_doctor_lists_a_fifo_and_finishes(tmp_path, capsys):
    root = _tree(tmp_path)
    os.mkfifo(root / "Pyramids" / "B" / "x.png")
    args = [f"data.root={root}", "data.split.val=1", "data.split.test=1"]
    assert _within(60, lambda: doctor_main(args)) == 0
    assert f"x.png: {FIFO}" in capsys.readouterr().out


def test_load_rgb_refuses_a_fifo_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(OSError, match=r"not a regular file \(FIFO\)"):
        _within(30, lambda: load_rgb(tmp_path / "x.png"))


def test_predict_inputs_skip_fifos_named_or_inside_folders(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    os.mkfifo(folder / "b.png")
    os.mkfifo(tmp_path / "c.jpg")
    files, skipped = _within(30, lambda: image_files([folder, tmp_path / "c.jpg"]))
    assert files == [folder / "a.png"]
    assert [(p.name, FIFO in why) for p, why in skipped] == [("c.jpg", True), ("b.png", True)]


def test_split_file_that_is_a_fifo_is_refused(tmp_path):
    catalog = scan_image_folder(_tree(tmp_path))
    os.mkfifo(tmp_path / "split.csv")
    with pytest.raises(SplitError, match=r"data\.split_file=.*split\.csv: cannot read it"):
        _within(30, lambda: read_split_csv(tmp_path / "split.csv", catalog))


# --- files and folders honour the umask --------------------------------------------------


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask):
    path = atomic_write_text(tmp_path / "metrics.json", "{}")
    assert _mode(path) == 0o666 & ~umask
    with open(tmp_path / "plain.txt", "w") as f:  # the reference
        f.write("x")
    assert _mode(path) == _mode(tmp_path / "plain.txt")


def test_generated_data_set_and_feature_cache_honour_the_umask(tmp_path, umask):
    import torch

    root = ensure_synthetic_dataset(
        tmp_path / "datasets", images_per_landmark=1, image_size=32, categories={"Gothic": ["M"]}
    )
    assert _mode(root) == 0o777 & ~umask
    assert {_mode(p) for p in root.rglob("*.png")} == {0o666 & ~umask}
    store = FeatureStore(tmp_path / "features", "enc")
    store.commit("original", ["ab" * 16], torch.ones(1, 3).numpy())
    (shard,) = (store.dir / "original").iterdir()
    assert _mode(shard) == 0o666 & ~umask and _mode(shard.parent) == 0o777 & ~umask
    assert {_mode(p) for p in store.dir.glob("index.sqlite*")} == {0o666 & ~umask}


def test_unreadable_store_shard_names_the_file_and_the_fix(tmp_path, monkeypatch):
    import torch

    from landmark_tl.data.features import store as store_module

    store = FeatureStore(tmp_path / "features", "enc")
    store.commit("original", ["cd" * 16], torch.ones(1, 3).numpy())
    (shard,) = (store.dir / "original").iterdir()

    def denied(path: Path) -> int:  # chmod 000 does not stop root, so deny it here
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store_module, "_checksum", denied)
    with pytest.raises(FeatureStoreError) as info:
        FeatureStore(tmp_path / "features", "enc").locate("original", ["cd" * 16])
    assert str(shard) in str(info.value) and "paths.cache_dir" in str(info.value)
    assert "LANDMARK_TL_CACHE" in str(info.value)


# --- command lines: the message alone, exit 1 (usage: 2) --------------------------------


@pytest.mark.slow
def test_train_with_a_landmark_too_small_prints_the_message_alone(tmp_path):
    root = _tree(tmp_path)  # 3 images per landmark: too few for 1 val + 3 test + 1 train
    args = [*TINY_OVERRIDES, f"data.root={root}", "data.split.test=3"]
    done = subprocess.run(
        [sys.executable, "-m", "landmark_tl.train", *args, f"paths.output_dir={tmp_path / 'o'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "LANDMARK_TL_CACHE": str(tmp_path / "cache"), "HYDRA_FULL_ERROR": ""},
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    _clean_error(done.stderr, "error: 4 landmarks have too few images", "data.split.test")


def test_hydra_task_errors_exit_1_unless_debugging(monkeypatch, capsys):
    @hydra_command
    def task(cfg: object) -> float:
        validate_config(compose_config(*TINY_OVERRIDES, "data.root=/x", "seed=-1"))
        return 0.0

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # restored after the test
    with pytest.raises(SystemExit) as info:
        task(None)
    assert info.value.code == 1
    _clean_error(capsys.readouterr().err, "error: invalid configuration", "seed=-1: must be in")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="seed=-1"):
        task(None)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["top_k=abc"], ["top_k=abc", "could not be converted to Integer"]),
        (["top_k=-1"], ["top_k=-1: must be a whole number >= 1"]),  # the run is not even read
        (["inputs=/nowhere/*.png"], ["no file or folder matches inputs=/nowhere/*.png"]),
        (["colour=blue"], ["Could not override 'colour'", "landmark-tl predict --help"]),
    ],
    ids=["top_k-abc", "top_k-negative", "glob-matches-nothing", "unknown-key"],
)
def test_predict_refuses_bad_arguments_before_loading_the_model(tmp_path, capsys, args, needles):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    run = tmp_path / "no-run-here"  # a run is never read: the arguments fail first
    argv = [f"run={run}", f"inputs={tmp_path / 'a.png'}", f"out={tmp_path / 'p.csv'}", *args]
    assert predict_main(argv) == 2
    _clean_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "p.csv").exists()


def test_predict_out_that_is_a_folder_is_refused(trained, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert predict_main([f"run={trained}", f"inputs={tmp_path / 'a.png'}", f"out={tmp_path}"]) == 2
    _clean_error(capsys.readouterr().err, f"out={tmp_path} is a folder", "predict.csv")


def test_debug_flag_shows_the_error_with_its_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # --debug sets it; restored after the test
    with pytest.raises(UsageError, match="top_k=abc"):
        predict_main(["--debug", f"run={tmp_path}", f"inputs={tmp_path}", "top_k=abc"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    assert take_debug_flag(["seed=1", "--debug"]) == ["seed=1"]  # train's, before Hydra
    assert os.environ["HYDRA_FULL_ERROR"] == "1"


def test_predict_on_a_random_dir_says_the_run_did_not_finish(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "random").mkdir()
    assert predict_main([f"run={tmp_path / 'random'}", f"inputs={tmp_path / 'a.png'}"]) == 1
    _clean_error(
        capsys.readouterr().err,
        f"error: run={tmp_path / 'random'}: no metrics.json: the run did not finish",
    )


def test_predict_on_a_multirun_dir_asks_for_one_of_its_runs(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    for job in ("0", "1"):
        (tmp_path / "multi" / job).mkdir(parents=True)
        (tmp_path / "multi" / job / "metrics.json").write_text("{}")
    assert predict_main([f"run={tmp_path / 'multi'}", f"inputs={tmp_path / 'a.png'}"]) == 1
    _clean_error(
        capsys.readouterr().err,
        "this is a multirun folder: pick one of its numbered runs",
        f"run={tmp_path / 'multi' / '0'}",
    )


@pytest.mark.parametrize("missing", ["hierarchy.json", "checkpoints/landmark-best.ckpt"])
def test_predict_on_an_incomplete_run_names_the_missing_file(trained, tmp_path, capsys, missing):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("*.png", "lightning_logs"))
    (run / missing).unlink()
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert predict_main([f"run={run}", f"inputs={tmp_path / 'a.png'}"]) == 1
    _clean_error(capsys.readouterr().err, f"{run / missing}: missing from the finished run")


def test_export_refuses_an_unknown_format_before_loading(tmp_path, capsys):
    assert export_main([f"run={tmp_path}", "format=tflite"]) == 2
    _clean_error(capsys.readouterr().err, "Invalid value 'tflite'", "[onnx, torchscript]")


def test_cache_dir_that_is_a_file_is_refused_naming_the_key(tmp_path, capsys):
    (tmp_path / "cache").write_text("not a folder")
    assert doctor_main([f"paths.cache_dir={tmp_path / 'cache'}"]) == 1
    _clean_error(capsys.readouterr().err, f"paths.cache_dir={tmp_path / 'cache'} is a file, not")


def test_doctor_with_a_bad_override_is_a_usage_error(capsys):
    assert doctor_main(["seed=abc"]) == 2
    _clean_error(capsys.readouterr().err, "seed=abc")


def test_split_file_that_is_a_folder_is_refused(tmp_path):
    catalog = scan_image_folder(_tree(tmp_path))
    run = tmp_path / "run"
    write_split_csv(run / "split.csv", catalog, ["train"] * len(catalog.records))
    with pytest.raises(SplitError, match=r"is a folder: give the split\.csv file.*run/split\.csv"):
        read_split_csv(run, catalog)


def test_split_file_with_a_byte_order_mark_is_read(tmp_path):
    catalog = scan_image_folder(_tree(tmp_path))
    assignment = ["train", "val", "test"] * 4
    write_split_csv(tmp_path / "split.csv", catalog, assignment)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "split.csv").read_bytes())
    assert read_split_csv(tmp_path / "bom.csv", catalog) == assignment


def test_image_deleted_after_the_scan_is_named(tmp_path, tiny_config):
    from landmark_tl.training.build import build_backbone

    catalog = scan_image_folder(_tree(tmp_path))
    gone = catalog.records[5].path
    gone.unlink()
    preprocessing = build_backbone(tiny_config()).preprocessing
    with pytest.raises(CatalogError, match=re.escape(f"{gone}: deleted or changed after the scan")):
        ImageDecoder(catalog, preprocessing)(5)


def test_negative_seed_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"seed=-1: must be in \[0, "):
        validate_config(compose_config(*TINY_OVERRIDES, "data.root=/x", "seed=-1"))


def test_vit_at_another_input_size_names_the_key():
    with pytest.raises(ConfigError, match=r"backbone\.input_size=\[3, 64, 64\] does not fit"):
        create_backbone("vit_tiny_patch16_224", weights="none", input_size=(3, 64, 64))
