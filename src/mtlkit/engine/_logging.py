"""Run logs: ``log.jsonl`` (one JSON object per iteration, everything the step returned), ``log.csv``
(flattened scalars) and TensorBoard scalars (per-task losses and weights every ``tb_every`` iterations,
10 by default: a TensorBoard event costs about as much as a small model's step; evaluation metrics always).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested dicts of scalars -> ``{"losses/semseg": 0.3, ...}``; lists and strings are left out."""
    out: dict[str, float] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, bool | int | float) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if hasattr(v, "tolist"):
        return _json_safe(v.tolist())
    return v


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, append: bool = False, tb_every: int = 10) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.tb_every = max(1, int(tb_every))
        self._tb = None
        self._csv_keys: list[str] | None = None
        if not enabled:
            return
        mode = "a" if append else "w"
        csv_path = run_dir / "log.csv"
        if append and csv_path.is_file():  # a resumed run: the header is written once, keep its columns
            with open(csv_path, newline="") as f:
                self._csv_keys = next(csv.reader(f), None)
        self._jsonl = open(run_dir / "log.jsonl", mode)
        self._evals = open(run_dir / "eval.jsonl", mode)
        self._csv_file = open(run_dir / "log.csv", mode, newline="")
        self._csv = csv.writer(self._csv_file)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # TensorBoard is optional: the JSONL/CSV logs are always written
            self._tb = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:  # fast path: plain finite values (NaN / inf and tensors go through _json_safe)
            line = json.dumps(record, allow_nan=False)
        except (ValueError, TypeError):
            line = json.dumps(_json_safe(record))
        self._jsonl.write(line + "\n")
        flat = flatten(record)
        if self._csv_keys is None:
            self._csv_keys = sorted(flat)
            self._csv.writerow(self._csv_keys)
        elif not flat.keys() <= set(self._csv_keys):
            self._widen_csv(sorted(set(flat) - set(self._csv_keys)))
        self._csv.writerow([flat.get(k, "") for k in self._csv_keys])
        it = int(record["iter"])
        if self._tb is not None and it % self.tb_every == 0:
            for k in ("losses", "weights"):
                for t, v in (record.get(k) or {}).items():
                    if isinstance(v, int | float):
                        self._tb.add_scalar(f"{k}/{t}", v, it)
            self._tb.add_scalar("lr", record.get("lr", 0.0), it)
        if it % 50 == 0:
            self.flush()

    def _widen_csv(self, new: list[str]) -> None:
        """Columns that appear after the first row (DTME's expansion, selective groups after warm-up, a
        fallback counter): rewrite ``log.csv`` once with the wider header, earlier rows blank in them."""
        self._csv_file.close()
        path = self.run_dir / "log.csv"
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        self._csv_keys = [*(self._csv_keys or []), *new]
        pad = [""] * len(new)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self._csv_keys)
            w.writerows(r + pad for r in rows)
        self._csv_file = open(path, "a", newline="")
        self._csv = csv.writer(self._csv_file)

    def log_eval(self, split: str, iteration: int, result: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._evals.write(json.dumps(_json_safe({"split": split, "iter": iteration, **result})) + "\n")
        if self._tb is not None:
            for k, v in flatten(result["tasks"]).items():
                self._tb.add_scalar(f"{split}/{k}", v, iteration)
        self.flush()

    def flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()
            self._evals.flush()
            self._csv_file.flush()
            if self._tb is not None:
                self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.flush()
            self._jsonl.close()
            self._evals.close()
            self._csv_file.close()
            if self._tb is not None:
                self._tb.close()
