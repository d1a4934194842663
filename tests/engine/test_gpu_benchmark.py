"""``benchmarks/gpu.py --small`` runs on CPU and writes its JSON and Markdown table (a subset of cells)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_benchmark_small_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gpu_small.json"
    mod.main(["--small", "--rows", "bare,equal,dtme_after", "--precisions", "fp32,bf16+compile", "--steps", "1",
              "--warmup", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    cells = {(r["row"], r["precision"]): r for r in data["results"]}
    assert set(cells) == {(r, p) for r in ("bare", "equal", "dtme_after") for p in ("fp32", "bf16+compile")}
    for r in cells.values():
        assert r["s_per_iter"] > 0 and r["peak_mib"] is not None
        assert r["vs_bare"] == r["s_per_iter"] / cells[("bare", r["precision"])]["s_per_iter"]
    md = out.with_suffix(".md").read_text()
    assert "| dtme_after |" in md and "bf16+compile s/iter" in md
