"""Data sources: a manifest CSV and GLDv2's own files give the same catalog as a folder tree,
and their bad input is refused (naming file and line) or skipped and reported."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from landmark_tl.commands.doctor import main as doctor
from landmark_tl.data.catalog import build_catalog, scan_image_folder
from landmark_tl.data.records import CatalogError
from landmark_tl.data.sources import Columns
from landmark_tl.data.sources.gldv2 import GLDv2Source, image_key
from landmark_tl.data.sources.manifest import ManifestSource
from landmark_tl.training.run import train
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.datasets import folder_manifest, jpeg, make_gldv2, write_csv


def _labels(catalog):
    return [(catalog.key(r.path), r.category, r.landmark) for r in catalog.records]


def test_a_manifest_of_a_tree_gives_the_folder_catalog(tiny_tree, tmp_path):
    manifest = folder_manifest(tiny_tree, tmp_path / "m.csv")
    catalog = build_catalog(ManifestSource(tiny_tree, manifest))
    folder = scan_image_folder(tiny_tree)
    assert _labels(catalog) == _labels(folder) and len(catalog.records) == 24
    assert catalog.hierarchy == folder.hierarchy
    assert catalog.content_digests() == folder.content_digests()


def test_a_hierarchy_file_can_give_the_categories(tiny_tree, tmp_path):
    manifest = folder_manifest(tiny_tree, tmp_path / "m.csv", category=False)
    hierarchy = write_csv(
        tmp_path / "h.csv",
        ["name", "style"],
        [["Milan Cathedral", "Gothic"], ["Cologne Cathedral", "Gothic"],
         ["Pyramid of Giza", "Pyramids"], ["Louvre Pyramid", "Pyramids"], ["Big Ben", "Gothic"]],
    )  # fmt: skip
    columns = Columns(landmark="landmark", category="style")
    with pytest.raises(CatalogError, match=r"h\.csv: lacks columns \['landmark'\]"):
        build_catalog(ManifestSource(tiny_tree, manifest, hierarchy, columns))
    write_csv(hierarchy, ["landmark", "style"], [["Milan Cathedral", "Gothic"]])
    catalog = build_catalog(ManifestSource(tiny_tree, manifest, hierarchy, columns))
    assert catalog.hierarchy.landmarks == (("Gothic", "Milan Cathedral"),)
    assert [(d.landmark, d.images) for d in catalog.dropped] == [
        ("Cologne Cathedral", 6),
        ("Louvre Pyramid", 6),
        ("Pyramid of Giza", 6),
    ]
    assert all("no row in the hierarchy file h.csv" in d.reason for d in catalog.dropped)


def test_hierarchy_landmarks_absent_from_the_manifest_are_noted(tiny_tree, tmp_path):
    manifest = folder_manifest(tiny_tree, tmp_path / "m.csv")
    rows = [["Milan Cathedral", "Gothic"], ["Big Ben", "Gothic"], ["Taj Mahal", "Mughal"]]
    hierarchy = write_csv(tmp_path / "h.csv", ["landmark", "category"], rows)
    catalog = build_catalog(ManifestSource(tiny_tree, manifest, hierarchy))
    assert len(catalog.records) == 24
    assert catalog.notes == [
        "h.csv lists 2 landmarks with no image in the manifest (e.g. Big Ben, Taj Mahal); "
        "they are ignored"
    ]


def _manifest(root: Path, rows: list[list[str]], **kwargs) -> Path:
    for key, *_ in rows:
        if not key.startswith(("/", "..", "gone")):
            jpeg(root / key, seed=abs(hash(key)) % 1000)
    return write_csv(root / "manifest.csv", ["path", "landmark", "category"], rows, **kwargs)


def test_bom_and_crlf_are_read(tmp_path):
    rows = [["a/1.jpg", "Dom", "Gothic"], ["a/2.jpg", "Dom", "Gothic"]]
    manifest = _manifest(tmp_path, rows, bom=True)
    assert manifest.read_bytes().startswith(b"\xef\xbb\xbfpath,landmark,category\r\n")
    catalog = build_catalog(ManifestSource(tmp_path))
    assert _labels(catalog) == [("a/1.jpg", "Gothic", "Dom"), ("a/2.jpg", "Gothic", "Dom")]


def test_missing_columns_are_refused_naming_the_config_key(tmp_path):
    write_csv(tmp_path / "manifest.csv", ["file", "landmark"], [["a.jpg", "Dom"]])
    with pytest.raises(CatalogError) as caught:
        build_catalog(ManifestSource(tmp_path))
    message = str(caught.value)
    assert (
        "manifest.csv: lacks columns ['path', 'category'] (it has ['file', 'landmark'])" in message
    )
    assert "data.columns.path=path, data.columns.category=category" in message


def test_repeated_and_ambiguous_rows_and_missing_files_are_skipped(tmp_path):
    rows = [
        ["a/1.jpg", "Dom", "Gothic"],
        ["a/2.jpg", "Dom", "Gothic"],
        ["a/1.jpg", "Dom", "Gothic"],
        ["a/3.jpg", "Dom", "Gothic"],
        ["a/3.jpg", "Nave", "Gothic"],
        ["gone/4.jpg", "Dom", "Gothic"],
        ["a/5.jpg", "", "Gothic"],
    ]
    catalog = build_catalog(ManifestSource(tmp_path, _manifest(tmp_path, rows)))
    assert _labels(catalog) == [("a/1.jpg", "Gothic", "Dom"), ("a/2.jpg", "Gothic", "Dom")]
    problems = {catalog.key(p.path): p.reason for p in catalog.problems}
    assert problems == {
        "a/1.jpg": "listed 2 times (manifest.csv lines 2, 4); the first row is used",
        "a/3.jpg": "listed with different labels (manifest.csv lines 5, 6: Gothic/Dom; "
        "Gothic/Nave): ambiguous, left out; remove the wrong rows",
        "gone/4.jpg": "file not found (manifest.csv line 7); add it or remove the row",
        "a/5.jpg": "empty landmark (manifest.csv line 8); fill it in",
    }


def test_a_landmark_with_two_categories_is_refused(tmp_path):
    rows = [["a/1.jpg", "Dom", "Gothic"], ["a/2.jpg", "Dom", "Baroque"]]
    with pytest.raises(CatalogError, match="line 3: landmark 'Dom' has category 'Baroque', "):
        build_catalog(ManifestSource(tmp_path, _manifest(tmp_path, rows)))
    rows = [["a/1.jpg", "Dom", "Gothic"]]
    hierarchy = write_csv(tmp_path / "h.csv", ["landmark", "category"], [["Dom", "Baroque"]])
    with pytest.raises(CatalogError, match="the hierarchy file says 'Baroque'"):
        build_catalog(ManifestSource(tmp_path, _manifest(tmp_path, rows), hierarchy))
    write_csv(hierarchy, ["landmark", "category"], [["Dom", "Gothic"], ["Dom", "Baroque"]])
    with pytest.raises(CatalogError, match=r"h\.csv, line 3: landmark 'Dom' is given category"):
        build_catalog(ManifestSource(tmp_path, _manifest(tmp_path, rows), hierarchy))


@pytest.mark.parametrize("path", ["/etc/passwd.jpg", "../outside.jpg", "a/../../outside.jpg"])
def test_paths_leaving_the_root_are_refused_naming_the_row(tmp_path, path):
    root = tmp_path / "root"
    rows = [["a/1.jpg", "Dom", "Gothic"], [path, "Dom", "Gothic"]]
    with pytest.raises(CatalogError) as caught:
        build_catalog(ManifestSource(root, _manifest(root, rows)))
    assert f"manifest.csv, line 3: path '{path}' must be relative to data.root" in str(caught.value)


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    jpeg(tmp_path / "elsewhere" / "x.jpg", seed=1)
    manifest = _manifest(root, [["a/1.jpg", "Dom", "Gothic"]])
    os.symlink(tmp_path / "elsewhere", root / "link")
    write_csv(manifest, ["path", "landmark", "category"], [["link/x.jpg", "Dom", "Gothic"]])
    with pytest.raises(CatalogError, match="line 2: path 'link/x.jpg' leads outside data.root"):
        build_catalog(ManifestSource(root, manifest))


def test_nothing_left_is_refused(tmp_path):
    manifest = _manifest(tmp_path, [["gone/1.jpg", "Dom", "Gothic"]])
    with pytest.raises(CatalogError, match="no readable images: all 1 image files failed"):
        build_catalog(ManifestSource(tmp_path, manifest))


@pytest.fixture(scope="module")
def gldv2_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gldv2")
    make_gldv2(root)
    return root


def test_gldv2_files_give_records_problems_and_dropped_landmarks(gldv2_root):
    catalog = build_catalog(GLDv2Source(gldv2_root))
    assert catalog.hierarchy.categories == ("bridge", "castle", "church")
    counts = {
        lm: sum(r.landmark == lm for r in catalog.records) for _, lm in catalog.hierarchy.landmarks
    }
    # 101: one image not downloaded; 102: one image not in train_clean.csv; 107: no hierarchy row
    assert counts == {"101": 11, "102": 8, "103": 7, "104": 6, "105": 3, "106": 1}
    assert all(r.path.name == Path(image_key(r.path.stem)).name for r in catalog.records)
    [problem] = catalog.problems
    assert problem.reason == "not downloaded (train.csv line 2): skipped; download it to use it"
    [dropped] = catalog.dropped
    assert (dropped.landmark, dropped.images) == ("107", 4)
    assert dropped.reason == "no row in train_label_to_hierarchical.csv"
    assert catalog.notes == [
        "train_clean.csv keeps 41 of 42 images of train.csv (data.clean=false uses them all)"
    ]


def test_gldv2_category_column_and_clean_are_configurable(gldv2_root):
    columns = Columns("id", "landmark_id", "natural_or_human_made")
    catalog = build_catalog(GLDv2Source(gldv2_root, clean=False, columns=columns))
    assert catalog.hierarchy.categories == ("human-made", "natural")
    assert sum(r.landmark == "102" for r in catalog.records) == 9


def test_gldv2_without_its_files_is_refused(gldv2_root, tmp_path):
    with pytest.raises(CatalogError, match="no train.csv; data=gldv2 needs data.root"):
        build_catalog(GLDv2Source(tmp_path))
    root = tmp_path / "copy"
    shutil.copytree(gldv2_root, root)
    write_csv(root / "train_clean.csv", ["landmark_id", "images"], [["101", "feedbeef"]])
    with pytest.raises(CatalogError, match="keeps none of the 42 images of train.csv"):
        build_catalog(GLDv2Source(root))
    (root / "train_label_to_hierarchical.csv").unlink()
    with pytest.raises(CatalogError, match="train_label_to_hierarchical.csv: not found"):
        build_catalog(GLDv2Source(root, clean=False))


def _config(tmp_path: Path, *overrides: str):
    base = [o for o in TINY_OVERRIDES if not o.startswith("data=")]
    return compose_config(*base, f"paths.cache_dir={tmp_path / 'cache'}", *overrides)


@pytest.mark.slow
def test_training_on_a_manifest_matches_the_folder_with_the_same_split(tiny_tree, tmp_path):
    folder = train(_config(tmp_path, "data=folder", f"data.root={tiny_tree}"), tmp_path / "a")
    manifest = folder_manifest(tiny_tree, tmp_path / "m.csv")
    other = train(
        _config(
            tmp_path,
            "data=manifest",
            f"data.root={tiny_tree}",
            f"data.manifest={manifest}",
            f"data.split_file={tmp_path / 'a' / 'split.csv'}",
        ),
        tmp_path / "b",
    )
    assert other["data"]["source"] == "manifest" and other["data"]["split"] == {
        "train": 12,
        "val": 4,
        "test": 8,
    }
    assert other["test"] == folder["test"] and other["hierarchy"] == folder["hierarchy"]
    assert (tmp_path / "a/predictions.csv").read_text() == (
        tmp_path / "b/predictions.csv"
    ).read_text()


def test_doctor_reads_a_manifest(tiny_tree, tmp_path, capsys):
    manifest = folder_manifest(tiny_tree, tmp_path / "m.csv")
    args = ["data=manifest", f"data.root={tiny_tree}", f"data.manifest={manifest}"]
    assert doctor([*args, "data.min_images_per_landmark=7"]) == 1
    assert "no landmark is left: data.min_images_per_landmark=7" in capsys.readouterr().out
    assert doctor(args) == 0
    assert "| Gothic | Milan Cathedral | 6 |" in capsys.readouterr().out
