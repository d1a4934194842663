"""The README's Python code blocks run, in order, in one namespace (as a reader would paste them)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3
    monkeypatch.setenv("MTLKIT_CACHE", str(tmp_path / "cache"))  # fresh baselines, nothing shared with other runs
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    metrics = namespace["metrics"]
    assert metrics["delta_m"] is not None and "Δm = " in out
    assert metrics["primary"]["income"] > 0.8  # the toy is learnable: the README shows a model that learns
    assert Path("runs/tabular/metrics.json").is_file()
    assert os.path.isdir(tmp_path / "cache" / "baselines" / "readme-tabular-v1")
    assert namespace["cfg"].iters == 200
