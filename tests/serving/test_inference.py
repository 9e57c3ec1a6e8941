"""Using a finished run: load_run().predict() and the predict command line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from landmark_tl import load_run
from landmark_tl.commands.predict import main as predict_main


def _recorded(run_dir):
    with open(run_dir / "predictions.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_loaded_run_reproduces_its_test_predictions(trained, tiny_tree):
    run = load_run(trained)
    rows = _recorded(trained)
    predictions = run.predict([tiny_tree / row["path"] for row in rows], top_k=2)
    assert [p.landmark for p in predictions] == [row["pred_landmark"] for row in rows]
    assert [p.category for p in predictions] == [row["pred_category"] for row in rows]
    for p in predictions:  # hierarchical: always consistent; top-k sorted
        assert p.landmark.startswith(p.category + "/")
        assert len(p.top_landmarks) == 2 and p.top_landmarks[0][1] >= p.top_landmarks[1][1]
    assert run.metrics["strategy"] == "hierarchical" and run.hierarchy.num_landmarks == 4


def test_paths_pil_images_and_tensors_give_the_same_answer(trained, tiny_tree):
    run = load_run(trained)
    path = next(iter(sorted(tiny_tree.rglob("*.png"))))
    image = Image.open(path).convert("RGB")
    tensor = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
    answers = [run.predict(x)[0] for x in (path, image, tensor)]
    assert len({(a.landmark, round(a.landmark_prob, 5)) for a in answers}) == 1


def test_predict_command_lists_unreadable_files_and_writes_csv(
    trained, tiny_tree, tmp_path, capsys
):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i, path in enumerate(sorted(tiny_tree.rglob("*.png"))[:3]):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out.csv"
    assert predict_main([f"run={trained}", f"inputs={folder}", "top_k=2", f"out={out}"]) == 0
    captured = capsys.readouterr()
    assert "3 predicted, 1 skipped" in captured.out and "broken.jpg" in captured.err
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["0.png", "1.png", "2.png"]
    assert {"landmark_top1", "landmark_top2"} <= set(rows[0])


def test_predict_prints_paths_that_tell_same_named_images_apart(
    trained, tiny_tree, tmp_path, capsys
):
    source = sorted(tiny_tree.rglob("*.png"))[0].read_bytes()
    for folder in ("a", "b", "b/deeper"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "img1.png").write_bytes(source)
    inputs = f"inputs=[{tmp_path / 'in' / 'a'},{tmp_path / 'in' / 'b'}]"
    assert predict_main([f"run={trained}", inputs, f"out={tmp_path / 'p.csv'}"]) == 0
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:4]]
    assert shown == ["a/img1.png", "b/deeper/img1.png", "b/img1.png"]


def test_predict_command_refuses_bad_arguments(trained, capsys):
    assert predict_main([f"run={trained}"]) == 2
    assert "inputs= required" in capsys.readouterr().err
    assert predict_main([f"run={trained}", "inputs=x", "colour=blue"]) == 2
    err = capsys.readouterr().err
    assert "Could not override 'colour'" in err and "landmark-tl predict --help" in err
    assert "Traceback" not in err


def test_evaluate_on_its_own_split_reproduces_the_run_metrics(trained):
    from landmark_tl.serving.evaluate import evaluate

    run = load_run(trained)
    result = evaluate(run)
    for task in ("category", "landmark"):
        for key in ("macro_f1", "accuracy", "top5_accuracy", "gap", "n"):
            assert result["test"][task][key] == pytest.approx(run.metrics["test"][task][key])
    assert result["hierarchy"]["consistency"] == 1.0


def test_evaluate_on_another_tree_reports_unknown_labels(trained, tiny_tree, tmp_path, capsys):
    import shutil

    from landmark_tl.commands.evaluate import main as evaluate_main

    other = tmp_path / "other"
    shutil.copytree(tiny_tree / "Gothic", other / "Gothic")
    (other / "Gothic" / "Reims").mkdir()
    for i in range(3):  # a landmark the run never saw
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(other / "Gothic" / "Reims" / f"{i}.png")
    out = tmp_path / "evaluation.json"
    assert evaluate_main([f"run={trained}", f"data.root={other}", f"out={out}"]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["unknown_labels"] == ["Gothic/Reims"]
    assert result["test"]["landmark"]["n"] == 12  # the two known Gothic landmarks, all images
    assert "unknown label, not scored: Gothic/Reims" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_predicts_like_pytorch(trained, tiny_tree, tmp_path, fmt):
    import json

    from landmark_tl.commands.export import main as export_main
    from landmark_tl.serving.export import Exportable

    assert export_main([f"run={trained}", f"format={fmt}", f"out={tmp_path}"]) == 0
    meta = json.loads((tmp_path / "labels.json").read_text())
    run = load_run(trained)
    images = torch.stack([run.to_tensor(p) for p in sorted(tiny_tree.rglob("*.png"))[:5]])
    with torch.no_grad():
        reference = [t.numpy() for t in Exportable(run)(images)]
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / meta["model"]))
        outputs = session.run(None, {"images": images.numpy()})
    else:
        with torch.no_grad():
            outputs = [t.numpy() for t in torch.jit.load(str(tmp_path / meta["model"]))(images)]
    assert np.abs(outputs[1] - reference[1]).max() < 1e-4  # landmark probabilities
    assert (outputs[3] == reference[3]).all() and (outputs[2] == reference[2]).all()
    assert meta["landmarks"] == run.hierarchy.landmark_names
    assert meta["input"]["preprocessing"]["input_size"] == [3, 64, 64]
