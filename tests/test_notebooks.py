"""Every notebook executes against a tiny run of its experiment (nbclient)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

# notebook -> (experiment module, tiny flags)
NOTEBOOKS = {
    "copg_bandit.ipynb": ("experiments.copg_bandit",
                          ["--seeds=2", "--epochs=2", "--num_pairs=256", "--batch_size=64",
                           "--methods=copg,ipo,md"]),
    "preference_game.ipynb": ("experiments.preference_game",
                              ["--seeds=1", "--steps=20", "--tau=0.1", "--methods=egpo,omd",
                               "--exact"]),
    "tabular_mdp.ipynb": ("experiments.tabular_mdp",
                          ["--seeds=1", "--steps=20", "--instances=1", "--num_states=4",
                           "--horizon=3", "--num_pairs=64", "--batch_size=16",
                           "--methods=copg,pmd", "--fixed_points=none"]),
    "contextual_bandit.ipynb": ("experiments.contextual_bandit",
                                ["--seeds=2", "--steps=20", "--contexts=3", "--actions=3",
                                 "--features=2", "--num_pairs=128", "--batch_size=32",
                                 "--methods=copg,is_pg", "--policies=tabular,log_linear"]),
    "toy_lm.ipynb": ("experiments.toy_lm",
                     ["--seeds=2", "--prompts=2", "--vocab=2", "--length=2", "--width=4",
                      "--beta=0.1,1", "--num_pairs=32", "--batch_size=16"]),
    "estimator_diagnostics.ipynb": ("experiments.estimator_diagnostics",
                                    ["--num_batches=50", "--mix=0,0.9",
                                     "--methods=copg,is_pg"]),
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, tmp_path):
    module, flags = NOTEBOOKS[name]
    out = tmp_path / "results"
    subprocess.run([sys.executable, "-m", module, f"--out={out}", "--progress=false", *flags],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    env_before = os.environ.get("COPG_RESULTS")
    os.environ["COPG_RESULTS"] = str(out)
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("COPG_RESULTS", None)
        else:
            os.environ["COPG_RESULTS"] = env_before
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
