"""``mtlkit reproduce``: run a paper recipe (``configs/<paper>/<table>.yaml``) row by row and write the table in
the paper's layout with the published numbers beside ours.

A recipe (schema: configs/README.md) is data: the protocol, per-row settings / overrides, the printed numbers.
:func:`plan` turns it into jobs, one per (row, dataset, seed[, searched option value]); single-task rows become
single-task baseline runs (one model per task, into ``<out>/_baselines``, where the multi-task rows of the same
budget find them for Δm); a Δm baseline printed in another recipe (``baseline_rows``) is run as an extra job.

- Resume: a job is done when its ``metrics.json`` exists; a started job continues
  from its resume state (``resume.json`` + ``resume.safetensors``).
- ``--shard i/n``: this process runs jobs ``i, i+n, ...`` of the ordered list (under ``torchrun``, RANK /
  WORLD_SIZE pick the shard and LOCAL_RANK the GPU); ``--table-only`` then collects every shard's results.
- ``--small``: the recipe's ``small`` section over the protocol (CPU scale on the synthetic twin of each dataset:
  ``small.datasets``, ``model: micro``, ``pretrained: default`` = the shipped MAE checkpoint). Columns of tasks
  the twin lacks (e.g. Taskonomy's) stay empty.
- Rows the engine cannot run are listed as skipped with the reason: ``unsupported`` rows of the recipe, rows whose
  architecture is not ``shared`` while the config has no ``model.arch`` field, URL rows while it has no
  ``method.distill`` field (both checks read the config schema, so the rows run once those fields exist).
- Best-on-validation model selection (``select: best``: ``run.select``), gradient clipping (``optim.grad_clip``)
  and non-square inputs (``image_size: [H, W]``) are applied; epoch-based schedules are converted to iterations,
  and the table's notes say so; our choice.

Δm (Maninis et al.) of a measured row is computed as ``check_recipes`` does for the printed one: mean over the
``over`` columns of (-1)^l (M - M_b) / M_b x 100 with the measured baseline row of the same seed, then averaged
over seeds.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlkit.errors import MtlkitError

#: printed metric name (lower case) -> mtlkit metric key (metrics.json ``tasks[task]``)
METRIC_ALIASES = {"miou": "mIoU", "merr": "mean", "maxf": "maxF", "odsf": "odsF", "rmse": "rmse", "l1": "l1"}
#: recipe decoder -> mtlkit head. ``multiscale_head`` is the selective code's ``TransformerMTL_multi`` + ``MLPHead``
#: (github wooseong97/sel-update-mtl, models/transformer_net.py, models/transformers/transformer_decoder.py): the
#: tokens of blocks 3, 6, 9 and the normed last block concatenated, one 1x1 conv per task, bilinear upsampling =
#: mtlkit's ``linear`` head on a ViT backbone's default features (``vit_out_indices``)
DECODERS = {"conv": "conv", "deeplab_aspp": "aspp", "multiscale_head": "linear", "linear": "linear",
            "hrnet": "hrnet"}
#: ``small`` keys that replace protocol keys (the others are merged into rows or read separately)
#: ``--small`` stand-in backbone for the CNN architectures (MTAN, MTI-Net) when ``small.model`` is a ViT preset:
#: our choice, overridable per recipe with ``small.cnn_model``; trained from random init (the shipped checkpoint
#: is a ViT)
SMALL_CNN = "resnet18"
SMALL_REPLACES = ("model", "pretrained", "image_size", "iters", "batch_size", "optimizer", "lr", "eval", "seeds",
                  "tasks", "architecture", "weight_decay", "lr_ts", "grad_stats")


# ----------------------------------------------------------------------------- recipes
def recipe_dir(explicit: str | Path | None = None) -> Path:
    """``explicit`` > ``$MTLKIT_RECIPES`` > ``./configs`` > the source checkout's ``configs/``."""
    for cand in (explicit, os.environ.get("MTLKIT_RECIPES"), Path.cwd() / "configs",
                 Path(__file__).resolve().parents[3] / "configs"):
        if cand and any(Path(cand).glob("*/*.yaml")):
            return Path(cand)
    raise MtlkitError("no recipes found: run from the mtlkit checkout (configs/) or pass --recipes DIR")


def list_recipes(root: str | Path | None = None) -> dict[str, Path]:
    base = recipe_dir(root)
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(base.glob("*/*.yaml"))}


def load_recipe(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """A recipe by id (``dtme/tab7``) or by path."""
    p = Path(name)
    if not (p.suffix == ".yaml" and p.is_file()):
        recipes = list_recipes(root)
        if name not in recipes:
            raise MtlkitError(f"unknown recipe {name!r}; `mtlkit reproduce --list` lists them "
                              f"(e.g. {', '.join(list(recipes)[:3])})")
        p = recipes[name]
    data = yaml.safe_load(p.read_text())
    for k in ("id", "protocol", "metrics", "rows"):
        if k not in (data or {}):
            raise MtlkitError(f"recipe {p}: missing key {k!r} (schema: configs/README.md)")
    return data


def _per_dataset(value: Any, dataset: str) -> Any:
    """A protocol value that is a map keyed by dataset resolves for ``dataset``."""
    if isinstance(value, dict) and dataset in value:
        return value[dataset]
    return value


def effective_protocol(recipe: dict[str, Any], row: dict[str, Any], small: bool) -> dict[str, Any]:
    """``protocol`` <- ``settings[row.setting]`` <- ``row.overrides`` (<- ``small``'s replacing keys)."""
    p = copy.deepcopy(recipe["protocol"])
    settings = recipe.get("settings") or {}
    if row.get("setting") is not None:
        p.update(copy.deepcopy(settings.get(row["setting"]) or {}))
    p.update(copy.deepcopy(row.get("overrides") or {}))
    if small:
        s = recipe.get("small") or {}
        p.update({k: copy.deepcopy(s[k]) for k in SMALL_REPLACES if k in s})
        p.pop("epochs", None)
        if "tasks" not in s:
            p.pop("tasks", None)  # the twin's own tasks
    return p


# ----------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One training run of a recipe row (or one single-task baseline set)."""

    recipe: str
    row: str
    label: str
    dataset: str  # the paper's dataset (the metric keys' prefix)
    seed: int
    out: Path
    config: dict[str, Any] = field(default_factory=dict)
    kind: str = "multi"  # multi | single_task
    variant: str = ""  # searched option value, e.g. "alpha=1.5"
    skip: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.row}|{self.dataset}|{self.seed}|{self.variant}"

    @property
    def done(self) -> bool:
        return (self.out / "metrics.json").is_file()


def _config_fields() -> set[str]:
    from mtlkit.engine.config import FLAT_KEYS

    return set(FLAT_KEYS)


def _skip_reason(row: dict[str, Any], proto: dict[str, Any], fields: set[str]) -> str | None:
    arch = proto.get("architecture", "shared") or "shared"
    is_url = bool(row.get("distill")) or str(row.get("label", "")).startswith("URL") or \
        str(row.get("unsupported", "")).startswith("URL")
    if is_url and "distill" not in fields:
        return "URL needs method.distill, which this engine's config does not have yet"
    if arch != "shared" and "arch" not in fields:
        return f"architecture {arch!r} needs model.arch, which this engine's config does not have yet"
    if row.get("unsupported") and not is_url:  # a URL row runs once method.distill exists
        return str(row["unsupported"])
    if row.get("method") is None and not is_url:
        return "no mtlkit method for this row"
    return None


def _pretrained_for(proto: dict[str, Any], pretrained: str | None, small: bool) -> tuple[str | None, str | None]:
    """(--pretrained value, skip reason). A directory holds one file per timm checkpoint name."""
    if small:
        return proto.get("pretrained"), None
    if pretrained is None:
        return None, None
    p = Path(pretrained)
    if p.is_dir():
        name = proto.get("checkpoint")
        if not isinstance(name, str):
            return None, f"no checkpoint name in the recipe to look up in {p}"
        for ext in (".safetensors", ".pth", ".bin"):
            if (p / f"{name}{ext}").is_file():
                return str(p / f"{name}{ext}"), None
        return None, f"checkpoint {name}.safetensors (or .pth / .bin) not in {p}"
    return str(p), None


def _base_config(recipe: dict[str, Any], row: dict[str, Any], proto: dict[str, Any], dataset: str, run_dataset: str,
                 seed: int, small: bool, data_root: str | None, pretrained: str | None,
                 notes: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"dataset": run_dataset, "seed": int(seed), "progress": False}
    if data_root and not small:
        cfg["data_root"] = data_root
    if proto.get("tasks"):
        cfg["tasks"] = list(proto["tasks"])
    size = _per_dataset(proto.get("image_size"), dataset)
    if isinstance(size, dict):
        size = size.get("train")
    if isinstance(size, list | tuple):
        cfg["image_size"] = int(size[0]) if size[0] == size[1] else [int(size[0]), int(size[1])]  # H x W
    elif size:
        cfg["image_size"] = int(size)
    model = {"name": proto.get("model") if small else proto.get("backbone"), "pretrained": pretrained}
    arch = proto.get("architecture", "shared") or "shared"
    if small and arch in ("mtan", "mtinet"):
        small_cnn = (recipe.get("small") or {}).get("cnn_model", SMALL_CNN)
        if model["name"] != small_cnn:
            notes.append(f"--arch {arch} needs a CNN: {small_cnn} from random init stands in for {model['name']}")
            model = {"name": small_cnn, "pretrained": None}
    ckpt = proto.get("checkpoint")
    if not small and pretrained and isinstance(ckpt, str) and "." in ckpt:
        model["name"] = ckpt  # the timm name with its pretrained tag, loaded from the file
    decoder = proto.get("decoder")
    if decoder:
        model["head"] = DECODERS.get(decoder, "conv")
    if arch != "shared":
        model["arch"] = arch
    cfg["model"] = {k: v for k, v in model.items() if v is not None}
    cfg["optimizer"] = proto.get("optimizer", "adam")
    cfg["lr"] = float(_per_dataset(proto.get("lr"), dataset))
    if proto.get("weight_decay") is not None:
        cfg["weight_decay"] = float(_per_dataset(proto["weight_decay"], dataset))
    if proto.get("lr_ts") is not None:
        cfg["lr_ts"] = float(_per_dataset(proto["lr_ts"], dataset))
    sched = proto.get("schedule") or {}
    if sched.get("power") is not None:
        cfg["poly_power"] = float(sched["power"])
    cfg["batch_size"] = int(_per_dataset(proto["batch_size"], dataset))
    if "iters" in proto:
        cfg["iters"] = int(_per_dataset(proto["iters"], dataset))
    elif "epochs" in proto:
        cfg["iters"] = {"epochs": int(_per_dataset(proto["epochs"], dataset))}  # resolved when the job runs
        notes.append("epochs converted to iterations (epochs x ceil(train images / batch))")
    ev = proto.get("eval") or {}
    cfg["eval_every"] = int(ev.get("every", 0) or 0) if ev.get("unit", "iteration") == "iteration" else 0
    if ev.get("select") == "best":
        if small and arch != "shared" and cfg["model"].get("name") != proto.get("model"):
            notes.append("model selection 'best on validation': the last model on the CNN stand-in rows "
                         "(no single-task baselines of the stand-in to measure Δm against)")
        else:
            cfg["select"] = "best"  # on the val split (NYUD-v2 / PASCAL-Context: the official val = test list)
            if arch != "shared":  # the recipes' Δm of architecture rows is against the plain single-task rows
                cfg["baseline_kind"] = "plain"
    if proto.get("grad_clip") is not None:
        cfg["grad_clip"] = float(proto["grad_clip"])
    data = row.get("data") or {}
    if data:
        cfg["dataset_options"] = copy.deepcopy(data)
    return cfg


def _method_config(recipe: dict[str, Any], row: dict[str, Any], proto: dict[str, Any], dataset: str,
                   small: bool) -> list[tuple[str, dict[str, Any]]]:
    """(variant, config additions) for a multi-task row; several when an option is ``search``."""
    method = row.get("method")
    out: dict[str, Any] = {}
    is_url = str(row.get("label", "")).startswith("URL") or bool(row.get("distill"))
    if is_url:
        out["method"] = method or "equal"
        out["distill"] = "url"
        if isinstance(row.get("distill"), dict):
            out["distill_options"] = row["distill"]
    else:
        out["method"] = method
    options = copy.deepcopy(row.get("options") or {})
    if options.get("weights") == "grid_weights":
        grid = _per_dataset(proto.get("grid_weights") or {}, dataset)
        if not isinstance(grid, dict) or not grid:
            raise MtlkitError(f"row {row['id']}: weights: grid_weights but protocol.grid_weights has none for "
                              f"{dataset}")
        options.pop("weights")
        out["weights"] = {k: float(v) for k, v in grid.items()}
    strat = copy.deepcopy(row.get("strategy") or {})
    if strat:
        if small and isinstance((recipe.get("small") or {}).get("strategy"), dict):
            strat.update(recipe["small"]["strategy"])
        out["strategy"] = strat.pop("name")
        out["strategy_options"] = strat
    if row.get("dtme") is not None:
        dt = {**(proto.get("dtme_defaults") or {}), **row["dtme"]}
        if small and isinstance((recipe.get("small") or {}).get("dtme"), dict):
            dt.update(recipe["small"]["dtme"])
        out["dtme"] = dt
    if row.get("recon") is not None:
        out["recon"] = dict(row["recon"])
    searched = [k for k, v in options.items() if v == "search"]
    if not searched:
        out["method_options"] = options
        return [("", out)]
    grid_src = ((recipe.get("small") or {}).get("search") if small else None) or recipe.get("search") or {}
    variants: list[tuple[str, dict[str, Any]]] = [("", {})]
    for opt in searched:
        values = grid_src.get(f"{method}.{opt}")
        if not values:
            raise MtlkitError(f"row {row['id']}: {opt}: search but no search grid {method}.{opt} in the recipe")
        variants = [(f"{v0},{opt}={v}".lstrip(","), {**o0, opt: v}) for v0, o0 in variants for v in values]
    fixed = {k: v for k, v in options.items() if v != "search"}
    return [(name, {**out, "method_options": {**fixed, **vals}}) for name, vals in variants]


def plan(recipe: dict[str, Any], out: str | Path, *, small: bool = False, data_root: str | None = None,
         pretrained: str | None = None, seeds: list[int] | None = None, iters: int | None = None,
         root: str | Path | None = None) -> list[Job]:
    """Every job of ``recipe`` in run order (single-task baselines first)."""
    rid = recipe["id"]
    out = Path(out)
    fields = _config_fields()
    rows = list(recipe["rows"])
    extra: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (row, its recipe) from baseline_rows
    for name, ref in (recipe.get("baseline_rows") or {}).items():
        other = load_recipe(ref["from"], root)
        row = next((r for r in other["rows"] if r["id"] == ref["row"]), None)
        if row is None:
            raise MtlkitError(f"recipe {rid}: baseline_rows.{name} -> {ref['from']} has no row {ref['row']!r}")
        extra.append(({**row, "id": name}, other))
    all_rows = [(r, recipe) for r in rows] + extra
    all_rows.sort(key=lambda rr: rr[0].get("method") != "single_task")
    jobs: list[Job] = []
    for row, src in all_rows:
        proto = effective_protocol(src, row, small)
        twin = (recipe.get("small") or {}).get("datasets") or {}
        datasets = list(recipe["protocol"]["datasets"])
        run_seeds = seeds if seeds is not None else list(proto.get("seeds") or [0])
        ckpt, ckpt_skip = _pretrained_for(proto, pretrained, small)
        for ds in datasets:
            run_ds = twin.get(ds, ds) if small else ds
            for seed in run_seeds:
                notes: list[str] = []
                skip = _skip_reason(row, proto, fields) or ckpt_skip
                base = {} if skip else _base_config(src, row, proto, ds, run_ds, seed, small, data_root, ckpt, notes)
                if iters is not None and base:
                    base["iters"] = int(iters)
                    base["eval_every"] = 0
                job_dir = out / "rows" / row["id"] / ds / f"seed{seed}"
                common = dict(recipe=rid, row=row["id"], label=row.get("label", row["id"]), dataset=ds, seed=seed,
                              skip=skip, notes=notes)
                base["baseline_cache"] = str(out / "_baselines")
                if row.get("method") == "single_task":
                    jobs.append(Job(out=job_dir, config=base, kind="single_task", **common))
                    continue
                if skip:
                    jobs.append(Job(out=job_dir, config=base, **common))
                    continue
                try:
                    variants = _method_config(src, row, proto, ds, small)
                except MtlkitError as e:
                    jobs.append(Job(out=job_dir, config=base, **{**common, "skip": str(e)}))
                    continue
                for name, add in variants:
                    d = job_dir / name.replace(",", "_") if name else job_dir
                    cfg = {**base, **add, "out": str(d)}
                    if iters is not None:
                        _scale_schedule(cfg, proto, ds, int(iters), notes)
                    jobs.append(Job(out=d, config=cfg, variant=name, **common))
    if not any(j.kind == "single_task" for j in jobs):  # no baselines to select on: the last model
        for j in jobs:
            if j.config.pop("select", None) is not None:
                j.config.pop("baseline_kind", None)
                j.notes.append("model selection 'best on validation': the last model (the recipe trains no "
                               "single-task baselines to measure Δm against)")
    return jobs


def _scale_schedule(cfg: dict[str, Any], proto: dict[str, Any], dataset: str, iters: int, notes: list[str]) -> None:
    """``--iters`` override: DTME / Recon expansion iterations and the selective warm-up keep their share of the
    run (at least 1, before the end)."""
    orig = proto.get("iters")
    orig = _per_dataset(orig, dataset) if orig is not None else None
    if not isinstance(orig, int) or orig <= 0:
        return

    def scaled(v: Any) -> Any:
        return max(1, min(iters - 1, round(v * iters / orig))) if isinstance(v, int) and v > 0 else v

    for key in ("dtme", "recon"):
        if isinstance(cfg.get(key), dict) and cfg[key].get("iteration") is not None:
            cfg[key] = {**cfg[key], "iteration": scaled(cfg[key]["iteration"])}
    if isinstance(cfg.get("strategy_options"), dict) and "warmup" in cfg["strategy_options"]:
        cfg["strategy_options"] = {**cfg["strategy_options"], "warmup": scaled(cfg["strategy_options"]["warmup"])}
    note = f"--iters {iters}: expansion iteration / warm-up scaled by {iters}/{orig}"
    if note not in notes:
        notes.append(note)


def shard(jobs: list[Job], spec: str | None) -> list[Job]:
    """``"i/n"``: jobs i, i+n, ... (0-based); None: all (or the torchrun rank's share)."""
    if spec is None:
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            spec = f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}"
        else:
            return jobs
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise MtlkitError(f"--shard {spec!r}: write i/n, e.g. 0/4 (shard i of n, 0-based)") from None
    if not (n >= 1 and 0 <= i < n):
        raise MtlkitError(f"--shard {spec!r}: need 0 <= i < n")
    return [j for k, j in enumerate(jobs) if k % n == i]


# ----------------------------------------------------------------------------- running
def _resolve_epochs(cfg: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(cfg.get("iters"), dict):
        return cfg
    from mtlkit.data import build_dataset

    ds = build_dataset(cfg["dataset"], "train", root=cfg.get("data_root"), tasks=cfg.get("tasks"),
                       image_size=cfg.get("image_size", 64), **cfg.get("dataset_options", {}))
    epochs = cfg["iters"]["epochs"]
    return {**cfg, "iters": epochs * math.ceil(len(ds) / cfg["batch_size"])}


def run_job(job: Job, device: str | None = None) -> dict[str, Any]:
    """Train one job (resuming a started one); returns its metrics.json content."""
    from mtlkit.engine.config import TrainConfig

    job.out.mkdir(parents=True, exist_ok=True)
    cfg_dict = _resolve_epochs(job.config)
    if device:
        cfg_dict = {**cfg_dict, "device": device}
    if job.kind == "single_task":
        from mtlkit.data import build_dataset
        from mtlkit.engine import train_single_task_baselines

        cfg = TrainConfig.from_dict({**cfg_dict, "out": str(job.out / "_unused")})
        ds = build_dataset(cfg.dataset, "val", root=cfg.data_root, tasks=cfg.tasks, image_size=cfg.image_size,
                           **cfg.dataset_options)
        path = train_single_task_baselines(cfg, list(ds.task_names))
        tasks: dict[str, Any] = {}
        for t in ds.task_names:
            m = json.loads((path.parent / t / "metrics.json").read_text())
            tasks[t] = m["tasks"][t]
        metrics = {"tasks": tasks, "baselines": str(path), "kind": "single_task"}
    else:
        from mtlkit.engine.trainer import Trainer

        cfg = TrainConfig.from_dict(cfg_dict)
        metrics = Trainer.from_config(cfg).fit(resume=(job.out / "resume.json").is_file())
    (job.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return metrics


def run(jobs: list[Job], device: str | None = None, progress: bool = True) -> dict[str, str]:
    """Run every pending, runnable job; a failing job is recorded (``error.txt``), the others go on."""
    status: dict[str, str] = {}
    todo = [j for j in jobs if not j.skip]
    for n, job in enumerate(todo, 1):
        if job.done:
            status[job.key] = "done (kept)"
            continue
        if progress:
            print(f"[{n}/{len(todo)}] {job.recipe} {job.row} {job.dataset} seed {job.seed} {job.variant}".rstrip(),
                  flush=True)
        try:
            run_job(job, device)
            status[job.key] = "trained"
            (job.out / "error.txt").unlink(missing_ok=True)
        except MtlkitError as e:
            job.out.mkdir(parents=True, exist_ok=True)
            (job.out / "error.txt").write_text(str(e) + "\n")
            status[job.key] = f"failed: {e}"
            if progress:
                print(f"  failed: {e}", flush=True)
    return status


# ----------------------------------------------------------------------------- table
def _metric_value(tasks: dict[str, Any], task: str | None, metric: str) -> float | None:
    if task is None or task not in tasks:
        return None
    m = tasks[task]
    for k in (METRIC_ALIASES.get(metric.lower(), metric), metric):
        if k in m and isinstance(m[k], int | float):
            return float(m[k])
    low = {k.lower(): v for k, v in m.items()}
    v = low.get(metric.lower())
    return float(v) if isinstance(v, int | float) else None


def measured_values(recipe: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``results``: job key -> metrics.json content. Returns per row: mean values per column, std, seeds,
    chosen search variant; Δm columns computed from the measured numbers (per seed, then averaged)."""
    metrics = recipe["metrics"]
    keys = [m["key"] for m in metrics]
    direction = {m["key"]: m.get("direction") for m in metrics}
    # per (row, seed, variant): column -> value
    cells: dict[tuple[str, int, str], dict[str, float]] = {}
    for jkey, res in results.items():
        row, ds, seed, variant = jkey.split("|")
        vals = cells.setdefault((row, int(seed), variant), {})
        for m in metrics:
            if m["dataset"] == ds:
                v = _metric_value(res.get("tasks") or {}, m.get("task"), str(m.get("metric", "")))
                if v is not None:
                    vals[m["key"]] = v

    def delta_m(vals: dict[str, float], base: dict[str, float], d: dict[str, Any]) -> float | None:
        parts = [(vals.get(k), base.get(k), direction.get(k)) for k in d["over"]]
        if any(a is None or b in (None, 0) for a, b, _ in parts):
            return None
        return 100 * sum((a - b) / b * (1 if dr == "max" else -1) for a, b, dr in parts) / len(parts)

    for (_row, seed, _variant), vals in cells.items():
        for d in recipe.get("delta_m") or []:
            base = cells.get((d["baseline"], seed, ""))
            if base is not None:
                dm = delta_m(vals, base, d)
                if dm is not None:
                    vals[d["key"]] = dm
    out: dict[str, Any] = {}
    first_dm = (recipe.get("delta_m") or [{}])[0].get("key")
    for row in [r["id"] for r in recipe["rows"]]:
        variants = sorted({v for (r, _, v) in cells if r == row})
        if not variants:
            continue
        chosen = variants[0]
        if len(variants) > 1 and first_dm:  # searched option: keep the best mean Δm, as the papers did
            def score(v: str, row: str = row) -> float:
                xs = [c[first_dm] for (r, _, vv), c in cells.items() if r == row and vv == v and first_dm in c]
                return statistics.mean(xs) if xs else -math.inf
            chosen = max(variants, key=score)
        per_seed = [c for (r, _, v), c in cells.items() if r == row and v == chosen]
        mean, std = [], []
        for k in keys:
            xs = [c[k] for c in per_seed if k in c]
            mean.append(statistics.mean(xs) if xs else None)
            std.append(statistics.stdev(xs) if len(xs) > 1 else None)
        out[row] = {"values": mean, "std": std, "seeds": len(per_seed), "variant": chosen}
    return out


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if abs(v) >= 0.1 or v == 0 else f"{v:.4f}"


def write_table(recipe: dict[str, Any], measured: dict[str, Any], out: str | Path, jobs: list[Job] | None = None,
                small: bool = False) -> dict[str, Any]:
    """``table.md`` (paper layout, each cell 'published / ours (ours - published)'), ``table.csv`` (long form)
    and ``table.json`` in ``out``; returns the JSON content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = recipe["metrics"]
    skipped: dict[str, str] = {}
    notes: list[str] = []
    for j in jobs or []:
        if j.skip:
            skipped.setdefault(j.row, j.skip)
        elif not j.done and (j.out / "error.txt").is_file():
            skipped.setdefault(j.row, "failed: " + (j.out / "error.txt").read_text().strip())
        for n in j.notes:
            if n not in notes:
                notes.append(n)
    cols = [f"{m['key']} {m.get('metric', '')}".strip() + (f" ({m['unit']})" if m.get("unit") else "")
            for m in metrics]
    src = recipe.get("source") or {}
    lines = [f"# {recipe['id']}: {src.get('table', '')} {src.get('caption', '')}".rstrip(), "",
             f"Each cell: published / ours{' (CPU twin, --small)' if small else ''} (ours - published). "
             "Published numbers as printed; ours: mean over seeds.", "",
             "| row | " + " | ".join(cols) + " | status |", "|---|" + "---|" * (len(cols) + 1)]
    rows_json = []
    csv_rows = []
    for row in recipe["rows"]:
        pub = row.get("values") or [None] * len(metrics)
        mine = measured.get(row["id"])
        ours = mine["values"] if mine else [None] * len(metrics)
        cells = []
        for m, p, o in zip(metrics, pub, ours, strict=True):
            diff = None if p is None or o is None else o - p
            cells.append(f"{'-' if p is None else f'{p:g}'} / {_fmt(o)}"
                         + (f" ({diff:+.2f})" if diff is not None else ""))
            csv_rows.append([row["id"], row.get("label", ""), m["key"], m.get("metric"), p, o, diff,
                             (mine["std"][metrics.index(m)] if mine else None)])
        reason = skipped.get(row["id"], "")
        status = (reason if reason.startswith("failed: ") else "skipped: " + reason) if reason else (
            f"{mine['seeds']} seed(s)" + (f", best {mine['variant']}" if mine and mine["variant"] else "")
            if mine else "not run yet")
        lines.append(f"| {row.get('label', row['id'])} | " + " | ".join(cells) + f" | {status} |")
        rows_json.append({"id": row["id"], "label": row.get("label"), "published": pub, "ours": ours,
                          "std": mine["std"] if mine else None, "status": status})
    if notes:
        lines += ["", "Engine notes (protocol values not honoured as printed):", *[f"- {n}" for n in notes]]
    md = "\n".join(lines) + "\n"
    (out / "table.md").write_text(md)
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", "column", "metric", "published", "ours", "diff", "ours_std"])
        w.writerows(csv_rows)
    result = {"recipe": recipe["id"], "small": small, "columns": [m["key"] for m in metrics], "rows": rows_json,
              "notes": notes, "markdown": md}
    (out / "table.json").write_text(json.dumps(result, indent=2))
    return result


def collect(jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Job key -> metrics.json of every finished job (any shard's)."""
    return {j.key: json.loads((j.out / "metrics.json").read_text()) for j in jobs if not j.skip and j.done}


def reproduce(name: str, out: str | Path | None = None, *, small: bool = False, data_root: str | None = None,
              pretrained: str | None = None, seeds: list[int] | None = None, iters: int | None = None,
              shard_spec: str | None = None, dry_run: bool = False, table_only: bool = False,
              device: str | None = None, root: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Plan, run (this shard's pending jobs) and tabulate a recipe; see the module docstring."""
    recipe = load_recipe(name, root)
    if not small and not dry_run and not table_only and data_root is None and \
            not all(d.startswith("synthetic") for d in recipe["protocol"]["datasets"]):
        raise MtlkitError(f"recipe {recipe['id']} trains on {', '.join(recipe['protocol']['datasets'])}: pass "
                          "--data-root DIR (or --small for the CPU twin)")
    out = Path(out or f"runs/reproduce/{recipe['id'].replace('/', '-')}{'-small' if small else ''}")
    jobs = plan(recipe, out, small=small, data_root=data_root, pretrained=pretrained, seeds=seeds, iters=iters,
                root=root)
    mine = shard(jobs, shard_spec)
    if device is None and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    status: dict[str, str] = {}
    if not dry_run and not table_only:
        status = run(mine, device, progress)
    table = write_table(recipe, measured_values(recipe, collect(jobs)), out, jobs, small)
    return {"out": str(out), "jobs": jobs, "mine": mine, "status": status, "table": table}


def jobs_table(jobs: list[Job]) -> str:
    """One line per job: state, row, dataset, seed, variant, what it trains or why it is skipped."""
    lines = []
    for j in jobs:
        state = "skip" if j.skip else ("done" if j.done else "todo")
        what = j.skip if j.skip else (
            "single-task baselines" if j.kind == "single_task" else
            " ".join(f"{k}={v}" for k, v in j.config.items()
                     if k in ("method", "method_options", "weights", "strategy", "dtme", "recon", "distill",
                              "dataset", "iters") and v not in ({}, None)))
        lines.append(f"{state:4} {j.row:28} {j.dataset:15} seed {j.seed} {j.variant:12} {what}")
    return "\n".join(lines)


__all__ = ["Job", "collect", "effective_protocol", "jobs_table", "list_recipes", "load_recipe", "measured_values",
           "plan", "recipe_dir", "reproduce", "run", "shard", "write_table"]
