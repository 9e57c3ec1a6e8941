"""The data doctor: a report before training, and a non-zero exit when training can't go on."""

from __future__ import annotations

import itertools
from pathlib import Path

from PIL import Image

from landmark_tl.commands.doctor import main
from landmark_tl.data.doctor import inspect_tree

_COLOURS = itertools.count()


def _image(path: Path, size=(40, 40), mode="RGB", color=None) -> None:
    """A new image with its own colour: no two are byte-identical (that would be a duplicate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = next(_COLOURS)
    Image.new(mode, size, color if color is not None else (n % 256, n // 256, 90)).save(path)


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for category in ("Gothic", "Pyramids"):
        for landmark in ("Alpha", "Beta"):
            for i in range(6):
                _image(root / category / landmark / f"{i}.png")
    return root


def test_a_clean_tree_is_ready(tmp_path, capsys):
    root = _tree(tmp_path)
    assert main([f"data.root={root}"]) == 0
    out = capsys.readouterr().out
    assert "**ready to train**" in out and "| Gothic | Alpha | 6 |" in out
    assert "2 categories, 4 landmarks, 24 usable images." in out


def test_issues_are_listed(tmp_path):
    root = _tree(tmp_path)
    _image(root / "Gothic" / "Alpha" / "dot.png", size=(1, 1))
    _image(root / "Gothic" / "Alpha" / "cmyk.jpg", mode="CMYK", color=(0, 0, 0, 0))
    (root / "Gothic" / "Beta" / "cut.png").write_bytes(
        (root / "Gothic" / "Beta" / "0.png").read_bytes()[:40]
    )
    for i in range(6):
        _image(root / "Pyramids" / "alpha " / f"{i}.png")  # collides with "Alpha"
    report = inspect_tree(root)
    assert report.ok
    assert [p.name for p, _ in report.tiny] == ["dot.png"]
    assert [(p.name, mode) for p, mode in report.odd_modes] == [("cmyk.jpg", "CMYK")]
    assert [p.name for p, _ in report.problems] == ["cut.png"]
    assert len(report.collisions) == 1 and "'Alpha'" in report.collisions[0]


def test_a_tree_that_cannot_train_exits_non_zero(tmp_path, capsys):
    root = _tree(tmp_path)
    for path in list((root / "Pyramids" / "Beta").iterdir())[2:]:
        path.unlink()  # 2 images left: too few for 2 val + 3 test
    assert main([f"data.root={root}"]) == 1
    out = capsys.readouterr().out
    assert "**training cannot proceed**" in out and "Pyramids/Beta" in out
    assert main([f"data.root={tmp_path / 'missing'}"]) == 1
    assert "does not exist" in capsys.readouterr().out
