"""The quickstart notebook runs top to bottom (so it cannot rot)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# end to end (full training runs, processes): pytest -m 'not slow' leaves them out
pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "LANDMARK_TL_CACHE", os.environ.get("LANDMARK_TL_CACHE", str(tmp_path / "cache"))
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    # no warnings in the cells: library notices of a run go to its train.log
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", "")) for o in outputs
    )
    assert "| hierarchical |" in text and "| multi_output |" in text  # the comparison table
    assert "->" in text  # predictions printed
    assert any("image/png" in o.get("data", {}) for o in outputs)  # curves and images shown
    assert (tmp_path / "notebook_runs" / "multi_output" / "metrics.json").is_file()
