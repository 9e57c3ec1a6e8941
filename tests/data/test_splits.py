"""Stratified splits and their CSV manifest."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from landmark_tl.core.hierarchy import LabelHierarchy
from landmark_tl.data.catalog import Catalog, scan_image_folder
from landmark_tl.data.records import ImageRecord
from landmark_tl.data.splits import (
    SPLITS,
    SplitError,
    SplitSpec,
    read_split_csv,
    stratified_split,
    write_split_csv,
)

RAW_STR = os.fsdecode(b"Hallgr\xa1mskirkja")  # undecodable bytes as surrogate escapes
ROOT = Path("/data/landmarks")


def make_catalog(sizes: dict[tuple[str, str], int], root: Path = ROOT) -> Catalog:
    """A catalog of ``sizes[(category, landmark)]`` records each; no files are needed."""
    records = [
        ImageRecord(root / category / landmark / f"{landmark}_{i:02d}.jpg", category, landmark)
        for (category, landmark), count in sorted(sizes.items())
        for i in range(count)
    ]
    return Catalog(root, records, LabelHierarchy.from_pairs(sizes), [])


def per_landmark(catalog: Catalog, assignment: list[str]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for record, split in zip(catalog.records, assignment, strict=True):
        counts.setdefault(record.landmark, Counter())[split] += 1
    return counts


STUDY_LIKE = {("Gothic", "Milan"): 14, ("Gothic", "Dom"): 11, ("Modern", "CCTV"): 6}


def test_counts_per_landmark_are_exact():
    catalog = make_catalog(STUDY_LIKE)
    assignment = stratified_split(catalog, SplitSpec(val=2, test=3))
    assert per_landmark(catalog, assignment) == {
        "Milan": Counter(train=9, val=2, test=3),
        "Dom": Counter(train=6, val=2, test=3),
        "CCTV": Counter(train=1, val=2, test=3),
    }


def test_zero_val_puts_nothing_in_val():
    catalog = make_catalog(STUDY_LIKE)
    assignment = stratified_split(catalog, SplitSpec(val=0, test=1))
    assert Counter(assignment) == Counter(train=28, test=3)


def test_fractions_round_to_the_nearest_image_per_landmark():
    catalog = make_catalog(STUDY_LIKE)
    counts = per_landmark(catalog, stratified_split(catalog, SplitSpec(val=0.1, test=0.25)))
    # Milan 14: 1.4 → 1 val, 3.5 → 4 test; Dom 11: 1.1 → 1, 2.75 → 3; CCTV 6: 0.6 → 1, 1.5 → 2
    assert counts == {
        "Milan": Counter(train=9, val=1, test=4),
        "Dom": Counter(train=7, val=1, test=3),
        "CCTV": Counter(train=3, val=1, test=2),
    }
    tiny = per_landmark(catalog, stratified_split(catalog, SplitSpec(val=0.01, test=0.0)))
    assert all(c == Counter(train=c.total()) for c in tiny.values())  # 0.14 rounds to 0
    # 0.2 of 4 images: 1 each (not up to 1 from any fraction above 0): train keeps half
    four = make_catalog({("Gothic", "Milan"): 4, ("Gothic", "Dom"): 2})
    counts = per_landmark(four, stratified_split(four, SplitSpec(val=0.2, test=0.2)))
    assert counts == {"Milan": Counter(train=2, val=1, test=1), "Dom": Counter(train=2)}
    # halves round up in decimal: 0.15 x 10 is 1.5 (the float product is 1.4999...)
    assert SplitSpec(val=0.15, test=0.25).counts(10) == (2, 3)


def test_the_study_protocol_counts_are_kept():
    # data.split.val=2 data.split.test=3: the same images as before fractions changed
    catalog = make_catalog({("Gothic", "Milan"): 14})
    assert stratified_split(catalog, SplitSpec(val=2, test=3)) == [
        "test", "test", "train", "train", "train", "train", "train", "train", "val", "train",
        "test", "train", "train", "val",
    ]  # fmt: skip


def test_a_split_where_test_outweighs_train_is_warned(caplog):
    from landmark_tl.data.splits import assign_splits

    catalog = make_catalog({("Gothic", "Milan"): 6, ("Gothic", "Dom"): 6})
    with caplog.at_level("WARNING", logger="landmark_tl.data.splits"):
        assignment = assign_splits(catalog, SplitSpec(val=2, test=3))
    assert Counter(assignment) == Counter(train=2, val=4, test=6)
    assert (
        "data.split.val=2, data.split.test=3: val (4 images) and test (6 images) outweighs "
        "train (2 images)" in caplog.text
    )
    caplog.clear()
    assign_splits(catalog, SplitSpec(val=0.2, test=0.2))
    assert not caplog.text  # 1 + 1 of 6: train keeps 4 of each


def test_split_is_deterministic_and_depends_on_the_seed():
    catalog = make_catalog(STUDY_LIKE)
    first = stratified_split(catalog, SplitSpec(seed=0))
    assert stratified_split(catalog, SplitSpec(seed=0)) == first
    assert stratified_split(catalog, SplitSpec(seed=1)) != first


def test_split_is_the_same_in_every_process():
    # A pinned result: string hashing (PYTHONHASHSEED) or dict order must not change it.
    catalog = make_catalog({("Gothic", "Milan"): 8})
    assert stratified_split(catalog, SplitSpec(val=2, test=3, seed=0)) == [
        "test", "train", "val", "test", "train", "test", "train", "val"
    ]  # fmt: skip


def test_adding_images_to_one_landmark_keeps_the_others_split():
    before = make_catalog(STUDY_LIKE)
    after = make_catalog({**STUDY_LIKE, ("Modern", "CCTV"): 9})
    split_before = stratified_split(before, SplitSpec())
    split_after = stratified_split(after, SplitSpec())
    gothic = [i for i, r in enumerate(before.records) if r.category == "Gothic"]
    assert [split_before[i] for i in gothic] == [split_after[i] for i in gothic]


def test_too_few_images_lists_every_offending_folder_and_the_fix():
    catalog = make_catalog({("Gothic", "Milan"): 14, ("Gothic", "Dom"): 5, ("Modern", "CCTV"): 2})
    with pytest.raises(SplitError) as caught:
        stratified_split(catalog, SplitSpec(val=2, test=3))
    message = str(caught.value)
    assert "2 landmarks have too few images" in message
    assert "landmark Gothic/Dom: 5 images, needs 6 (2 val + 3 test + 1 train)" in message
    assert "landmark Modern/CCTV: 2 images, needs 6" in message
    assert "Add images of these landmarks" in message and "folders" not in message
    assert "Milan" not in message
    assert "lower data.split.val / data.split.test, use fractions" in message
    assert "data.split.small=train_only" in message


def test_fractions_that_leave_no_train_image_are_refused():
    catalog = make_catalog({("Gothic", "Milan"): 2})
    with pytest.raises(SplitError, match="Gothic/Milan: 2 images, needs 3"):
        stratified_split(catalog, SplitSpec(val=0.25, test=0.25))  # 0.5 rounds up to 1 each


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"val": -1}, "data.split.val=-1: a count cannot be negative"),
        ({"test": -2}, "data.split.test=-2: a count cannot be negative"),
        ({"val": 1.0}, "data.split.val=1.0: a fraction must be in [0, 1)"),
        ({"test": 2.5}, "data.split.test=2.5: a fraction must be in [0, 1)"),
        ({"val": float("nan")}, "data.split.val=nan"),
        ({"test": "3"}, "data.split.test='3': must be an image count"),
        ({"val": True}, "data.split.val=True: must be an image count"),
        ({"val": 0.5, "test": 0.5}, "data.split.val + data.split.test = 0.5 + 0.5 >= 1"),
        ({"seed": "0"}, "data.split.seed='0': must be an integer"),
    ],
)
def test_bad_specs_name_the_config_key(kwargs, text):
    with pytest.raises(SplitError) as caught:
        SplitSpec(**kwargs)
    assert text in str(caught.value)


ODD = {
    ("Modern", "Cathedral of Bras”lia"): 6,
    ("Modern", RAW_STR): 6,
    ("Neoclassical", "Panth‚on"): 6,
    ('Odd, "quoted"', "new\nline"): 6,
}


def test_manifest_round_trips_including_odd_and_undecodable_names(tmp_path):
    catalog = make_catalog(ODD)
    assignment = stratified_split(catalog, SplitSpec(val=1, test=2, seed=3))
    manifest = tmp_path / "run" / "split.csv"
    write_split_csv(manifest, catalog, assignment)
    assert read_split_csv(manifest, catalog) == assignment
    raw = manifest.read_bytes()
    assert raw.startswith(b"split,category,landmark,path\n")
    assert b"Modern/Hallgr\xa1mskirkja/Hallgr\xa1mskirkja_00.jpg" in raw
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["split.csv"]  # no temp left


def test_manifest_rows_are_sorted_by_category_landmark_and_path(tmp_path):
    catalog = make_catalog({("B", "x"): 3, ("A", "y"): 3, ("A", "x"): 3})
    write_split_csv(tmp_path / "split.csv", catalog, stratified_split(catalog, SplitSpec(1, 1)))
    paths = [line.split(",")[-1] for line in (tmp_path / "split.csv").read_text().splitlines()]
    assert paths[1:] == [r.path.relative_to(ROOT).as_posix() for r in catalog.records]
    assert paths[1:4] == ["A/x/x_00.jpg", "A/x/x_01.jpg", "A/x/x_02.jpg"]


def test_manifest_of_a_scanned_tree_round_trips(tmp_path):
    root = tmp_path / "data"
    for j, landmark in enumerate(("Milan", RAW_STR)):
        for i in range(3):
            folder = root / "Gothic" / landmark
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 50, j * 50, 0)).save(folder / f"{i}.png")
    catalog = scan_image_folder(root)
    assignment = stratified_split(catalog, SplitSpec(val=1, test=1))
    write_split_csv(tmp_path / "split.csv", catalog, assignment)
    assert read_split_csv(tmp_path / "split.csv", catalog) == assignment
    assert sorted(assignment) == sorted(["train", "val", "test"] * 2)


def test_manifest_listing_files_outside_the_catalog_is_refused(tmp_path):
    full = make_catalog({("Gothic", "Milan"): 6, ("Gothic", "Dom"): 6})
    write_split_csv(tmp_path / "split.csv", full, stratified_split(full, SplitSpec()))
    fewer = make_catalog({("Gothic", "Milan"): 6, ("Gothic", "Dom"): 5})
    with pytest.raises(SplitError) as caught:
        read_split_csv(tmp_path / "split.csv", fewer)
    message = str(caught.value)
    assert f"{tmp_path / 'split.csv'}: lists 1 files not among the readable images" in message
    assert "Gothic/Dom/Dom_05.jpg" in message
    assert "belongs to another tree" in message
    assert "does not list" not in message


def test_catalog_images_missing_from_the_manifest_are_refused(tmp_path):
    few = make_catalog({("Gothic", "Milan"): 6})
    write_split_csv(tmp_path / "split.csv", few, stratified_split(few, SplitSpec()))
    more = make_catalog({("Gothic", "Milan"): 10, ("Modern", "CCTV"): 6})
    with pytest.raises(SplitError) as caught:
        read_split_csv(tmp_path / "split.csv", more)
    message = str(caught.value)
    assert "does not list 10 images" in message
    assert "e.g. Gothic/Milan/Milan_06.jpg, Gothic/Milan/Milan_07.jpg, " in message
    assert "regenerate the split or remove those files" in message


def test_manifest_with_other_labels_than_the_data_is_refused(tmp_path):
    catalog = make_catalog({("Gothic", "Milan"): 6})
    write_split_csv(tmp_path / "split.csv", catalog, stratified_split(catalog, SplitSpec(1, 1)))
    relabelled = make_catalog({("Gothic", "Milan"): 6})
    relabelled.records[0] = ImageRecord(relabelled.records[0].path, "Gothic", "Dom")
    with pytest.raises(SplitError, match="lists 1 images .* under other labels"):
        read_split_csv(tmp_path / "split.csv", relabelled)


HEADER = "split,category,landmark,path\n"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "lacks columns ['split', 'category', 'landmark', 'path']"),
        ("split,path\ntrain,Gothic/Milan/a.jpg\n", "lacks columns ['category', 'landmark']"),
        (HEADER + "holdout,Gothic,Milan,Gothic/Milan/a.jpg\n", "line 2: unknown split 'holdout'"),
        (HEADER + "train,Gothic,Milan\n", "line 2: too few fields"),
        (HEADER + "train,Gothic,Milan,/a.jpg\n", "line 2: path '/a.jpg' must be relative"),
        (HEADER + "train,Gothic,Milan,../a.jpg\n", "line 2: path '../a.jpg' must be relative"),
        (
            HEADER + "train,Gothic,Milan,Gothic/Milan/a.jpg\nval,Gothic,Milan,Gothic/Milan/a.jpg\n",
            "line 3: 'Gothic/Milan/a.jpg' is listed twice",
        ),
        (HEADER + 'train,Gothic,Milan,"Gothic/Milan/a.jpg\n', "not a valid CSV file"),
        (HEADER + 'train,"Gothic"x,Milan,Gothic/Milan/a.jpg\n', "not a valid CSV file"),
    ],
)
def test_malformed_manifests_are_refused_naming_the_file(tmp_path, text, error):
    manifest = tmp_path / "split.csv"
    manifest.write_text(text)
    with pytest.raises(SplitError) as caught:
        read_split_csv(manifest, make_catalog({("Gothic", "Milan"): 6}))
    assert str(caught.value).startswith(str(manifest))
    assert error in str(caught.value)


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(SplitError, match="split manifest not found"):
        read_split_csv(tmp_path / "nope.csv", make_catalog({("Gothic", "Milan"): 6}))


def test_bad_assignments_are_not_written(tmp_path):
    catalog = make_catalog({("Gothic", "Milan"): 6})
    with pytest.raises(SplitError, match="5 entries for 6 records"):
        write_split_csv(tmp_path / "split.csv", catalog, ["train"] * 5)
    with pytest.raises(SplitError, match="unknown split names \\['holdout'\\]"):
        write_split_csv(tmp_path / "split.csv", catalog, ["train"] * 5 + ["holdout"])
    assert not (tmp_path / "split.csv").exists()
    assert SPLITS == ("train", "val", "test")
