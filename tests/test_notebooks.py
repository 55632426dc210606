"""The planner notebooks run end to end (at small scale) and show their figures."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["capacity_planning", "policy_whatif", "policy_search", "surge_nowcast"])
def test_notebook_executes(root, name, monkeypatch):
    nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit without outputs"
    monkeypatch.setenv("FLOODGATE_NOTEBOOK_SMALL", "1")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
