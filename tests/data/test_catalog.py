"""Scanning <root>/<category>/<landmark>/<image> trees: records, problems and refusals."""

from __future__ import annotations

import csv
import io
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from landmark_tl.data import catalog as catalog_module
from landmark_tl.data.catalog import scan_image_folder
from landmark_tl.data.decode import AVIF_HINT, load_rgb
from landmark_tl.data.records import WRONG_DEPTH, CatalogError, ImageRecord

RAW_NAME = b"Hallgr\xa1mskirkja"  # not valid UTF-8, like the study's mojibake folders
RAW_STR = os.fsdecode(RAW_NAME)


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), fmt: str | None = None):
    """A small image whose bytes differ per path (identical copies count as duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (8, 8), color)
    tag = zlib.crc32(os.fsencode(path))
    image.putpixel((0, 0), (tag & 255, (tag >> 8) & 255, (tag >> 16) & 255))
    image.save(path, format=fmt)
    return path


def make_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    for category, landmarks in layout.items():
        for landmark, count in landmarks.items():
            for i in range(count):
                write_image(root / category / landmark / f"{landmark}_{i}.png", (i * 40, 90, 10))
    return root


def png_bytes(size: tuple[int, int] = (16, 16)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def read_report(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        return list(csv.reader(f))


def test_scan_gives_sorted_records_hierarchy_and_labels(tmp_path):
    root = make_tree(tmp_path, {"Pyramids": {"Giza": 2}, "Gothic": {"Milan": 1, "Chartres": 3}})
    catalog = scan_image_folder(root)
    assert catalog.root == tmp_path.absolute()
    assert [(r.category, r.landmark, r.path.name) for r in catalog.records] == [
        ("Gothic", "Chartres", "Chartres_0.png"),
        ("Gothic", "Chartres", "Chartres_1.png"),
        ("Gothic", "Chartres", "Chartres_2.png"),
        ("Gothic", "Milan", "Milan_0.png"),
        ("Pyramids", "Giza", "Giza_0.png"),
        ("Pyramids", "Giza", "Giza_1.png"),
    ]
    assert catalog.records[0] == ImageRecord(
        tmp_path / "Gothic" / "Chartres" / "Chartres_0.png", "Gothic", "Chartres"
    )
    assert catalog.hierarchy.categories == ("Gothic", "Pyramids")
    assert catalog.hierarchy.landmarks == (
        ("Gothic", "Chartres"),
        ("Gothic", "Milan"),
        ("Pyramids", "Giza"),
    )
    assert catalog.labels() == ([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 2, 2])
    assert catalog.problems == []


def test_extensions_match_case_insensitively(tmp_path):
    folder = tmp_path / "Gothic" / "Milan"
    names = {"a.JPG": "JPEG", "b.Png": "PNG", "c.jpeg": "JPEG", "d.tif": "TIFF"}
    names |= {"e.webp": "WEBP", "f.bmp": "BMP", "g.gif": "GIF", "h.TIFF": "TIFF"}
    for name, fmt in names.items():
        write_image(folder / name, fmt=fmt)
    catalog = scan_image_folder(tmp_path)
    assert [r.path.name for r in catalog.records] == sorted(names)
    assert catalog.problems == []


def test_hidden_entries_and_non_image_files_are_ignored(tmp_path, caplog):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 2}})
    write_image(root / "Gothic" / "Milan" / ".hidden.png")
    write_image(root / ".git" / "objects" / "x.png")
    write_image(root / "Gothic" / ".cache" / "y.png")
    (root / "README.md").write_text("about")
    (root / "Gothic" / "Milan" / "Thumbs.db").write_bytes(b"\0")
    (root / "Gothic" / "Milan" / "notes.txt").write_text("n")
    with caplog.at_level(logging.INFO, logger=catalog_module.__name__):
        catalog = scan_image_folder(root)
    assert [r.path.name for r in catalog.records] == ["Milan_0.png", "Milan_1.png"]
    assert catalog.problems == []
    assert "ignored 3 hidden entries and 3 non-image files" in caplog.text


def test_unreadable_files_are_skipped_reported_and_logged(tmp_path, caplog):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 2}, "Modern": {"CCTV": 1}})
    folder = root / "Gothic" / "Milan"
    (folder / "truncated.png").write_bytes(png_bytes()[:300])
    (folder / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger=catalog_module.__name__):
        catalog = scan_image_folder(root)
    assert [r.path.name for r in catalog.records] == ["Milan_0.png", "Milan_1.png", "CCTV_0.png"]
    assert [p.path.name for p in catalog.problems] == ["empty.png", "garbage.jpg", "truncated.png"]
    assert all(p.reason.startswith("unreadable: ") for p in catalog.problems)
    assert "truncated" in catalog.problems[2].reason
    assert "skipped 3 image files" in caplog.text

    report = tmp_path / "out" / "problems.csv"
    catalog.write_problem_report(report)
    rows = read_report(report)
    assert rows[0] == ["path", "reason"]
    assert rows[1:] == [[str(p.path), p.reason] for p in catalog.problems]


def test_problem_report_is_written_when_there_are_no_problems(tmp_path):
    catalog = scan_image_folder(make_tree(tmp_path / "data", {"Gothic": {"Milan": 1}}))
    catalog.write_problem_report(tmp_path / "problems.csv")
    assert (tmp_path / "problems.csv").read_text() == "path,reason\n"


def test_truncated_files_are_caught_even_when_pillow_was_relaxed(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    root = make_tree(tmp_path, {"Gothic": {"Milan": 1}})
    (root / "Gothic" / "Milan" / "truncated.png").write_bytes(png_bytes()[:300])
    catalog = scan_image_folder(root)
    assert [p.path.name for p in catalog.problems] == ["truncated.png"]
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_without_verify_files_are_not_decoded(tmp_path):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 1}})
    (root / "Gothic" / "Milan" / "garbage.jpg").write_bytes(b"not a jpeg")
    catalog = scan_image_folder(root, verify=False)
    assert [r.path.name for r in catalog.records] == ["Milan_0.png", "garbage.jpg"]
    assert catalog.problems == []


def test_result_is_the_same_for_any_number_of_workers(tmp_path):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 5, "Dom": 4}, "Modern": {"CCTV": 6}})
    (root / "Gothic" / "Dom" / "bad.png").write_bytes(b"x")
    one, many = scan_image_folder(root, workers=1), scan_image_folder(root, workers=8)
    assert one.records == many.records
    assert one.problems == many.problems
    with pytest.raises(ValueError, match="workers must be at least 1"):
        scan_image_folder(root, workers=0)


def test_images_at_the_wrong_depth_are_reported(tmp_path):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 1}})
    write_image(root / "stray.jpg")
    write_image(root / "Gothic" / "loose.png")
    write_image(root / "Gothic" / "Milan" / "sub" / "deeper" / "nested.png")
    (root / "Gothic" / "Milan" / "sub" / "notes.txt").write_text("n")
    catalog = scan_image_folder(root)
    assert [r.path.name for r in catalog.records] == ["Milan_0.png"]
    assert [(p.path.relative_to(root).as_posix(), p.reason) for p in catalog.problems] == [
        ("Gothic/Milan/sub/deeper/nested.png", WRONG_DEPTH),
        ("Gothic/loose.png", WRONG_DEPTH),
        ("stray.jpg", WRONG_DEPTH),
    ]
    assert "<category>/<landmark>/" in WRONG_DEPTH


def test_avif_decodes_when_pillow_supports_it(tmp_path):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 1}})
    write_image(root / "Gothic" / "Milan" / "photo.avif", fmt="AVIF")
    catalog = scan_image_folder(root)
    assert [r.path.name for r in catalog.records] == ["Milan_0.png", "photo.avif"]
    assert load_rgb(catalog.records[1].path).size == (8, 8)


def test_avif_without_support_is_a_problem_that_says_how_to_enable_it(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "avif_supported", lambda: False)
    root = make_tree(tmp_path, {"Gothic": {"Milan": 1}})
    (root / "Gothic" / "Milan" / "photo.AVIF").write_bytes(b"avif bytes")
    for verify in (True, False):
        catalog = scan_image_folder(root, verify=verify)
        assert [(p.path.name, p.reason) for p in catalog.problems] == [("photo.AVIF", AVIF_HINT)]
    assert "pillow-avif-plugin" in AVIF_HINT


def build_unusable(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A tree that must be refused, and a text the refusal must contain."""
    root = tmp_path / "data"
    if case == "missing":
        return root, "does not exist"
    if case == "file":
        root.write_text("not a folder")
        return root, "is a file, not a folder"
    root.mkdir()
    if case == "empty root":
        return root, "contains no category folders"
    if case == "only files in root":
        write_image(root / "a.png")
        return root, "found 1 image files directly in it"
    make_tree(root, {"Gothic": {"Milan": 1}})
    if case == "category without landmarks":
        write_image(root / "Modern" / "loose.png")
        return root / "Modern", "category folder has no landmark folders"
    if case == "empty landmark":
        (root / "Gothic" / "Dom").mkdir()
        return root / "Gothic" / "Dom", "it is empty"
    if case == "landmark without images":
        (root / "Gothic" / "Dom").mkdir()
        (root / "Gothic" / "Dom" / "notes.txt").write_text("n")
        return root / "Gothic" / "Dom", "only 1 other entries"
    if case == "landmark all unreadable":
        (root / "Gothic" / "Dom").mkdir()
        for name in ("a.png", "b.jpg"):
            (root / "Gothic" / "Dom" / name).write_bytes(b"broken")
        return root / "Gothic" / "Dom", "all 2 image files are unreadable"
    if case == "nothing readable":
        (root / "Gothic" / "Milan" / "Milan_0.png").write_bytes(b"broken")
        return root, "no readable images: all 1 image files failed"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "file",
        "empty root",
        "only files in root",
        "category without landmarks",
        "empty landmark",
        "landmark without images",
        "landmark all unreadable",
        "nothing readable",
    ],
)
def test_unusable_trees_are_refused_naming_the_folder(tmp_path, case):
    folder, text = build_unusable(tmp_path, case)
    with pytest.raises(CatalogError) as caught:
        scan_image_folder(tmp_path / "data")
    message = str(caught.value)
    assert str(folder) in message
    assert text in message


def test_every_unusable_folder_is_listed_in_one_error(tmp_path):
    root = make_tree(tmp_path, {"Gothic": {"Milan": 1}})
    for folder in ("Gothic/Dom", "Modern/CCTV", "Mughal"):
        (root / folder).mkdir(parents=True)
    with pytest.raises(CatalogError, match="3 folders are unusable") as caught:
        scan_image_folder(root)
    for folder in ("Gothic/Dom", "Modern/CCTV", "Mughal"):
        assert str(root / folder) in str(caught.value)


def test_odd_and_undecodable_names_scan_and_report(tmp_path, caplog):
    root = make_tree(
        tmp_path, {"Neoclassical": {"Panth‚on": 1}, "Modern": {"Cathedral of Bras”lia": 1}}
    )
    raw_folder = os.path.join(os.fsencode(root / "Modern"), RAW_NAME)
    os.mkdir(raw_folder)
    write_image(Path(os.fsdecode(raw_folder)) / "Hallgr_1.png")
    (Path(os.fsdecode(raw_folder)) / "broken.png").write_bytes(b"broken")
    with caplog.at_level(logging.INFO, logger=catalog_module.__name__):
        catalog = scan_image_folder(root)
    assert catalog.hierarchy.landmarks == (
        ("Modern", "Cathedral of Bras”lia"),
        ("Modern", RAW_STR),
        ("Neoclassical", "Panth‚on"),
    )
    assert catalog.labels()[1] == [0, 1, 2]
    assert "Modern/Hallgr\ufffdmskirkja" in catalog.hierarchy.landmark_names
    assert load_rgb(catalog.records[1].path).size == (8, 8)
    assert "Hallgr\ufffdmskirkja" in caplog.text  # logged printably

    report = tmp_path / "problems.csv"
    catalog.write_problem_report(report)
    assert os.path.join(raw_folder, b"broken.png") in report.read_bytes()
    assert read_report(report)[1][0] == str(catalog.problems[0].path)


def test_undecodable_folder_names_in_errors_are_printable(tmp_path):
    root = make_tree(tmp_path, {"Modern": {"CCTV": 1}})
    os.mkdir(os.path.join(os.fsencode(root / "Modern"), RAW_NAME))
    with pytest.raises(CatalogError) as caught:
        scan_image_folder(root)
    message = str(caught.value)
    message.encode("utf-8")  # no lone surrogates left to crash a log handler
    assert "Modern/Hallgr\ufffdmskirkja: landmark folder has no image files" in message
