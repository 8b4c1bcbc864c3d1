"""notebooks/scaling.ipynb runs top to bottom on a smoke-grid-sized store, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from report_data import core_dataset, write

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "scaling.ipynb"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    # The smoke grid's axes (conf/grid/smoke.yaml), computed with the core directly.
    store = write(core_dataset(processes=(1, 10, 100), pages_per_vma=(16,),
                               cow_fraction=(0.0, 0.5, 1.0), cpus=(1, 2), seed=(0, 1)),
                  tmp_path / "results.zarr")
    monkeypatch.setenv("ANONVMA_RESULTS", str(store))
    # The kernel runs in notebooks/ (as in Jupyter); `sweep` and `core` come from the repo.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    except Exception as exc:  # nbclient's CellExecutionError carries the cell and traceback
        pytest.fail(f"notebook failed: {exc}")
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot was drawn
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                   for o in outputs)
    assert "points done" in text and "O(1)" in text
