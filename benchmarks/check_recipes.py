"""Validate the paper recipes in configs/<paper>/<table>.yaml (schema: configs/README.md).

Checks every file for the required keys, that each row's method is an mtlkit method (or is marked unsupported),
that each row has one value per metric column (a null needs a reason), and that ids, settings and Δm references
resolve. It then recomputes every printed Δm from the row's per-task numbers and the baseline row, and, when the
paper texts are at hand (``--papers``, default /work/shared/papers), checks that each row's numbers appear
together on one line of the paper text. Both are reported, not failed: the papers themselves are not always
consistent, and each known inconsistency is listed in the recipe's ``notes``.

Stdlib + PyYAML only, so it runs without torch:

    python benchmarks/check_recipes.py                 # validate, report, exit 1 on a schema error
    python benchmarks/check_recipes.py --strict        # also exit 1 on a Δm mismatch or a number not in the text
    python benchmarks/check_recipes.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAPERS = ("imbalance", "selective", "dtme")
#: mtlkit's balancing methods (README method table / `mtlkit methods`) plus the single-task baseline.
METHODS = {
    "equal", "fixed", "uw", "dwa", "dtp", "rlw", "famo", "gradnorm", "gls", "avgnorm", "mgda", "mgda_ub", "pcgrad",
    "cagrad", "graddrop", "imtl", "aligned_mtl", "nash_mtl", "fairgrad", "upgrad", "dualproj", "gradvac",
    "single_task",
}
#: option names of the methods the recipes set (README method table); a typo must not pass silently.
METHOD_OPTIONS = {
    "fixed": {"weights"},
    "gradnorm": {"alpha", "params", "chunk_size"},
    "dwa": {"temp", "window"},
    "avgnorm": {"params", "eps", "chunk_size"},
    "cagrad": {"c", "rescale", "on", "chunk_size"},
    "fairgrad": {"alpha", "max_iters", "on", "chunk_size"},
    "famo": {"gamma", "w_lr", "max_norm", "update"},
    "mgda": {"on", "epsilon", "max_iters", "chunk_size"},
    "mgda_ub": {"on", "epsilon", "max_iters", "chunk_size"},
}
STRATEGIES = {"selective", "joint"}
SELECTIVE_KEYS = {"name", "grouping", "order", "decay", "attribution", "warmup", "double_single", "group_size",
                  "num_groups", "preference", "convergence_iter", "group_norm", "seed"}
GROUPINGS = {"affinity", "joint", "separate", "random"}
DTME_KEYS = {"iteration", "rho", "r", "tokens", "selection", "mode", "modulator", "freeze", "calib_batches", "seed",
             "measure_inference"}
DTME_SELECTIONS = {"conflict", "random", "reverse", "swap"}
DTME_MODES = {"both", "tm-only", "te-only"}
RECON_KEYS = {"iteration", "layers", "share", "threshold", "calib_batches", "measure_inference"}
DATASETS = {"nyud", "pascal-context", "taskonomy", "replica", "synthetic-nyud", "synthetic-pascal"}
TOP_KEYS = ("schema", "id", "source", "protocol", "metrics", "rows", "small")
SOURCE_KEYS = ("paper", "title", "text", "table", "section", "caption")
METRIC_KEYS = ("key", "dataset", "task", "metric", "direction")
NUMBER = re.compile(r"(?<![\w.])([+\-\u2212]?)\s?(\d+(?:\.\d+)?)(?![\w.])")


class RecipeError(Exception):
    """A schema problem in one recipe file."""


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_all(root: Path) -> dict[str, dict[str, Any]]:
    recipes = {}
    for path in sorted((root / "configs").glob("*/*.yaml")):
        with path.open() as f:
            data = yaml.safe_load(f)
        recipes[f"{path.parent.name}/{path.stem}"] = data | {"_path": str(path.relative_to(root))}
    return recipes


def validate(rid: str, r: dict[str, Any]) -> list[str]:
    """Schema errors of one recipe (empty when valid)."""
    errs: list[str] = []

    def err(msg: str) -> None:
        errs.append(f"{rid}: {msg}")

    for k in TOP_KEYS:
        if k not in r:
            err(f"missing top-level key {k!r}")
    if errs:
        return errs
    if r["id"] != rid:
        err(f"id {r['id']!r} does not match the file name ({rid})")
    src = r["source"]
    for k in SOURCE_KEYS:
        if not src.get(k):
            err(f"source.{k} missing")
    if src.get("paper") not in PAPERS or rid.split("/")[0] != src.get("paper"):
        err(f"source.paper {src.get('paper')!r} must be one of {PAPERS} and match the folder")
    if not isinstance(r.get("cite"), dict) or not r["cite"]:
        err("cite: a non-empty map saying where the protocol values come from")
    proto = r["protocol"]
    for k in ("datasets", "architecture", "backbone", "optimizer", "lr", "batch_size", "eval", "seeds"):
        if k not in proto:
            err(f"protocol.{k} missing")
    if not ("iters" in proto or "epochs" in proto):
        err("protocol: needs iters or epochs")
    for ds in proto.get("datasets", []):
        if ds not in DATASETS:
            err(f"protocol.datasets: unknown dataset {ds!r}")
    ev = proto.get("eval", {})
    if not isinstance(ev, dict) or ev.get("select") not in ("best", "last"):
        err("protocol.eval.select must be best or last")

    metrics = r["metrics"]
    keys = [m.get("key") for m in metrics]
    if len(set(keys)) != len(keys):
        err("duplicate metric keys")
    for m in metrics:
        for k in METRIC_KEYS:
            if k not in m:
                err(f"metric {m.get('key')!r}: missing {k}")
        if m.get("direction") not in ("max", "min", None):
            err(f"metric {m.get('key')!r}: direction must be max, min or null")
        if m.get("dataset") not in DATASETS:
            err(f"metric {m.get('key')!r}: unknown dataset {m.get('dataset')!r}")

    settings = r.get("settings") or {}
    ids = [row.get("id") for row in r["rows"]]
    if len(set(ids)) != len(ids):
        err("duplicate row ids")
    file_null_reason = r.get("null_reason")
    for row in r["rows"]:
        rid_ = row.get("id")
        if not isinstance(row.get("label"), str):
            err(f"row {rid_}: label (as printed) missing")
        method = row.get("method")
        if method is None:
            if not row.get("unsupported"):
                err(f"row {rid_}: method null needs an 'unsupported' reason")
        elif method not in METHODS:
            err(f"row {rid_}: unknown method {method!r}")
        if "options" in row:
            if not isinstance(row["options"], dict):
                err(f"row {rid_}: options must be a map")
            else:
                bad_opts = set(row["options"]) - METHOD_OPTIONS.get(method, set())
                if bad_opts:
                    err(f"row {rid_}: unknown option(s) {sorted(bad_opts)} for method {method!r}")
        if row.get("setting") is not None and row["setting"] not in settings:
            err(f"row {rid_}: setting {row['setting']!r} not in settings")
        strat = row.get("strategy")
        if strat is not None:
            if not isinstance(strat, dict) or strat.get("name") not in STRATEGIES:
                err(f"row {rid_}: strategy must be a map with name in {sorted(STRATEGIES)}")
            else:
                bad = set(strat) - SELECTIVE_KEYS
                if bad:
                    err(f"row {rid_}: unknown strategy option(s) {sorted(bad)}")
                if strat.get("grouping", "affinity") not in GROUPINGS and not row.get("unsupported"):
                    err(f"row {rid_}: grouping {strat.get('grouping')!r} unsupported but not marked")
        dt = row.get("dtme")
        if dt is not None:
            if not isinstance(dt, dict) or set(dt) - DTME_KEYS:
                err(f"row {rid_}: dtme options must be a map with keys in {sorted(DTME_KEYS)}")
            else:
                if dt.get("selection", "conflict") not in DTME_SELECTIONS:
                    err(f"row {rid_}: dtme selection {dt.get('selection')!r}")
                if dt.get("mode", "both") not in DTME_MODES:
                    err(f"row {rid_}: dtme mode {dt.get('mode')!r}")
        rc = row.get("recon")
        if rc is not None and (not isinstance(rc, dict) or set(rc) - RECON_KEYS):
            err(f"row {rid_}: recon options must be a map with keys in {sorted(RECON_KEYS)}")
        vals = row.get("values")
        if not isinstance(vals, list) or len(vals) != len(metrics):
            err(f"row {rid_}: values must list one entry per metric ({len(metrics)})")
            continue
        for v, m in zip(vals, metrics, strict=True):
            if v is None:
                if not (row.get("null_reason") or file_null_reason):
                    err(f"row {rid_}: {m['key']} is null without a null_reason")
            elif not _is_num(v):
                err(f"row {rid_}: {m['key']} = {v!r} is not a number")
        std = row.get("std")
        if std is not None and (not isinstance(std, list) or len(std) != len(metrics)):
            err(f"row {rid_}: std must list one entry per metric")

    for d in r.get("delta_m") or []:
        if d.get("key") not in keys:
            err(f"delta_m: unknown column {d.get('key')!r}")
        if d.get("baseline") not in ids and d.get("baseline") not in (r.get("baseline_rows") or {}):
            err(f"delta_m {d.get('key')}: baseline row {d.get('baseline')!r} not found")
        for k in d.get("over", []):
            if k not in keys:
                err(f"delta_m {d.get('key')}: unknown column {k!r}")
    if not isinstance(r["small"], dict) or not r["small"]:
        err("small: CPU twin overrides missing")
    return errs


def _row_values(r: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    return {m["key"]: v for m, v in zip(r["metrics"], row["values"], strict=True)}


def _baseline(recipes: dict[str, dict[str, Any]], r: dict[str, Any], row_id: str) -> dict[str, Any] | None:
    for row in r["rows"]:
        if row["id"] == row_id:
            return _row_values(r, row)
    ref = (r.get("baseline_rows") or {}).get(row_id)
    if ref and ref.get("from") in recipes:
        other = recipes[ref["from"]]
        for row in other["rows"]:
            if row["id"] == ref.get("row"):
                return _row_values(other, row)
    return None


def _decimals(v: float, text: str | None = None) -> int:
    s = repr(float(v))
    return len(s.split(".")[1].rstrip("0")) if "." in s else 0


def check_delta_m(recipes: dict[str, dict[str, Any]], rid: str, r: dict[str, Any]) -> tuple[int, list[str]]:
    """Recompute printed Δm: mean over tasks of (-1)^l (M - M_b) / M_b, in %. Returns (#checked, mismatches)."""
    directions = {m["key"]: m["direction"] for m in r["metrics"]}
    checked, bad = 0, []
    for d in r.get("delta_m") or []:
        base = _baseline(recipes, r, d["baseline"])
        if base is None:
            continue
        for row in r["rows"]:
            vals = _row_values(r, row)
            printed = vals.get(d["key"])
            parts = [(vals.get(k), base.get(k), directions[k]) for k in d["over"]]
            if printed is None or any(a is None or b is None or b == 0 for a, b, _ in parts):
                continue
            gains = [(a - b) / b * (1 if dr == "max" else -1) for a, b, dr in parts]
            ours = 100 * sum(gains) / len(gains)
            # inputs are rounded: tolerate half a unit of the printed Δm plus the rounding of the inputs
            tol = 0.5 * 10 ** -max(_decimals(printed), 1) + 100 * sum(
                0.5 * 10 ** -_decimals(a) / abs(b) for a, b, _ in parts) / len(parts) + 1e-9
            checked += 1
            if abs(ours - printed) > tol:
                bad.append(f"{rid} {row['id']}: {d['key']} printed {printed:+.3f}, recomputed {ours:+.3f}")
    return checked, bad


def _line_numbers(text: str) -> list[list[float]]:
    out = []
    for line in text.splitlines():
        nums = [float(("-" if s in "-\u2212" and s else "") + n) for s, n in NUMBER.findall(line)]
        if nums:
            out.append(nums)
    return out


def check_text(r: dict[str, Any], lines: list[list[float]]) -> tuple[int, list[str]]:
    """Each row's printed numbers must all appear on one line of the paper text (``composed`` rows: anywhere)."""
    checked, missing = 0, []
    for row in r["rows"]:
        want = [v for v in row["values"] if v is not None] + [v for v in (row.get("std") or []) if v is not None]
        if not want:
            continue
        checked += 1
        if row.get("composed"):  # printed across several lines (e.g. a transposed table): each number somewhere
            everywhere = {n for nums in lines for n in nums}
            if not all(any(abs(n - v) < 1e-9 for n in everywhere) for v in want):
                missing.append(f"{r['id']} {row['id']}: a number is not in {r['source']['text']}")
            continue
        ok = False
        for nums in lines:
            pool = list(nums)
            hit = True
            for v in want:
                for i, n in enumerate(pool):
                    if abs(n - v) < 1e-9:
                        pool.pop(i)
                        break
                else:
                    hit = False
                    break
            if hit:
                ok = True
                break
        if not ok:
            missing.append(f"{r['id']} {row['id']}: numbers not found together on one line of {r['source']['text']}")
    return checked, missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--papers", type=Path, default=Path("/work/shared/papers"))
    ap.add_argument("--strict", action="store_true", help="fail on Δm mismatches and numbers missing from the text")
    ap.add_argument("--json", type=Path, help="write the per-file summary as JSON")
    args = ap.parse_args(argv)

    recipes = load_all(args.root)
    if not recipes:
        print("no recipes under configs/")
        return 1
    texts: dict[str, list[list[float]]] = {}
    errors: list[str] = []
    warnings: list[str] = []
    summary = []
    for rid, r in recipes.items():
        errs = validate(rid, r)
        errors += errs
        if errs:
            summary.append({"recipe": rid, "errors": len(errs)})
            continue
        n_values = sum(v is not None for row in r["rows"] for v in row["values"])
        n_null = sum(v is None for row in r["rows"] for v in row["values"])
        dm_checked, dm_bad = check_delta_m(recipes, rid, r)
        txt_checked, txt_bad = 0, []
        tfile = args.papers / r["source"]["text"]
        if tfile.is_file():
            if tfile.name not in texts:
                texts[tfile.name] = _line_numbers(tfile.read_text())
            txt_checked, txt_bad = check_text(r, texts[tfile.name])
        warnings += dm_bad + txt_bad
        summary.append({"recipe": rid, "rows": len(r["rows"]), "columns": len(r["metrics"]), "numbers": n_values,
                        "nulls": n_null, "unsupported": sum(bool(row.get("unsupported")) for row in r["rows"]),
                        "delta_m_checked": dm_checked, "delta_m_mismatch": len(dm_bad),
                        "rows_in_text": txt_checked - len(txt_bad) if tfile.is_file() else None,
                        "rows_not_in_text": len(txt_bad) if tfile.is_file() else None})

    head = f"{'recipe':22} {'rows':>4} {'cols':>4} {'numbers':>7} {'nulls':>5} {'unsup':>5} {'Δm ok':>7} {'in text':>8}"
    print(head)
    print("-" * len(head))
    for s in summary:
        if "errors" in s:
            print(f"{s['recipe']:22} {s['errors']} schema error(s)")
            continue
        dm = f"{s['delta_m_checked'] - s['delta_m_mismatch']}/{s['delta_m_checked']}"
        txt = "-" if s["rows_in_text"] is None else f"{s['rows_in_text']}/{s['rows_in_text'] + s['rows_not_in_text']}"
        print(f"{s['recipe']:22} {s['rows']:>4} {s['columns']:>4} {s['numbers']:>7} {s['nulls']:>5} "
              f"{s['unsupported']:>5} {dm:>7} {txt:>8}")
    total_rows = sum(s.get("rows", 0) for s in summary)
    total_nums = sum(s.get("numbers", 0) for s in summary)
    print(f"{len(summary)} recipes, {total_rows} rows, {total_nums} published numbers")
    for w in warnings:
        print("warning:", w)
    for e in errors:
        print("error:", e)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "warnings": warnings, "errors": errors}, indent=1))
    return 1 if errors or (args.strict and warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
