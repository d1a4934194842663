"""The ``mtlkit`` command line: train | eval | bench | analyze | data | methods | models | grid.

User errors (unknown names, bad values, missing files) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from mtlkit._kv import parse_kv  # the one KEY=VALUE parser of every --*-opt flag
from mtlkit.errors import MtlkitError

__all__ = ["build_parser", "main", "parse_kv"]


def _tasks(value: str | None) -> list[str] | None:
    return None if value is None else [t for t in value.replace(",", " ").split() if t]


def _image_size(value: str) -> int | list[int]:
    """``64`` (square) or ``448x576`` (H x W)."""
    try:
        parts = [int(p) for p in value.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW (e.g. 448x576), got {value!r}") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"image size must be N or HxW (e.g. 448x576), got {value!r}")
    return parts[0] if len(parts) == 1 else parts


# ----------------------------------------------------------------------------- train
TRAIN_FLAGS = {  # flag -> (config key, type, help)
    "--dataset": ("dataset", str, "dataset name (see `mtlkit data list`)"),
    "--data-root": ("data_root", str, "root folder of a real dataset"),
    "--tasks": ("tasks", _tasks, "subset of the dataset's tasks, e.g. semseg,depth"),
    "--image-size": ("image_size", _image_size, "input size: a side (square) or HxW, e.g. 448x576"),
    "--model": ("model", str, "preset (micro, tiny, small, base, large) or any timm model name (`mtlkit models`)"),
    "--head": ("head", str, "head kind: linear, conv, aspp or hrnet"),
    "--patch-size": ("patch_size", int, "override a ViT's patch size"),
    "--pretrained": ("pretrained", str, "timm checkpoint file (.safetensors / .pth / .bin) on disk; never downloaded"),
    "--method": ("method", str, "balancing method (see `mtlkit methods`)"),
    "--strategy": ("strategy", str, "update strategy: joint or selective"),
    "--iters": ("iters", int, "training iterations"),
    "--batch-size": ("batch_size", int, "batch size per process"),
    "--lr": ("lr", float, "learning rate"),
    "--lr-ts": ("lr_ts", float, "LR multiplier of task-specific parameters"),
    "--weight-decay": ("weight_decay", float, "weight decay"),
    "--optimizer": ("optimizer", str, "adam, adamw or sgd"),
    "--eval-every": ("eval_every", int, "validate every N iterations (0: at the end only)"),
    "--grad-stats-every": ("grad_stats_every", int, "record gradient statistics every N steps (0: off)"),
    "--seed": ("seed", int, "random seed"),
    "--out": ("out", str, "run directory"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:1, ..."),
    "--num-workers": ("num_workers", int, "data loader workers"),
    "--baseline": ("baseline", str, "explicit single-task baselines.json for Δm"),
    "--select": ("select", str, "the run's model: last, or best (highest validation Δm; needs baselines)"),
    "--grad-clip": ("grad_clip", float, "clip the global gradient norm of the model to this value (InvPT: 10)"),
    "--precision": ("precision", str, "fp32, bf16 or fp16 (autocast; fp16 with a GradScaler)"),
    "--max-memory": ("max_memory", str, "refuse before training when one step's peak memory exceeds this, e.g. 8GB"),
    "--arch": ("arch", str, "architecture: shared (default), mtan, mtinet, invpt or taskprompter"),
    "--baseline-kind": ("baseline_kind", str, "Δm reference of an --arch run: arch (its single-task twins) or plain"),
    "--distill": ("distill", str, "distil the single-task models into the shared features: url (docs/url.md)"),
}


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with the config sections (data, model, method, strategy, "
                   "transforms, optim, run; flags given here win); see configs/")
    for flag, (_, typ, help_) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=str if typ is _tasks else typ, default=None, help=help_)
    p.add_argument("--method-opt", action="append", metavar="KEY=VALUE", help="method hyper-parameter (repeatable)")
    p.add_argument("--strategy-opt", action="append", metavar="KEY=VALUE", help="strategy option (repeatable)")
    p.add_argument("--dataset-opt", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)")
    p.add_argument("--arch-opt", action="append", metavar="KEY=VALUE",
                   help="--arch option (repeatable; backbone.KEY=VALUE for its backbone)")
    p.add_argument("--weights", metavar="TASK=W,...", help="fixed loss weights (implies --method fixed)")
    for name, what in (("dtme", "DTME-MTL token modulation / expansion"), ("recon", "the Recon baseline")):
        p.add_argument(f"--{name}", nargs="?", const="", action="append", metavar="KEY=VALUE,...",
                       help=f"expand the model with {what} during training (options optional, see mtlkit.dtme)")
        p.add_argument(f"--{name}-opt", action="append", metavar="KEY=VALUE", help=f"--{name} option (repeatable)")
    p.add_argument("--distill-opt", action="append", metavar="KEY=VALUE", help="--distill url option (repeatable)")
    p.add_argument("--feature-distance", nargs="?", const="", default=None, metavar="KEY=VALUE,...",
                   help="probe the distance to the single-task features per task (study Fig. 6; every=N, lr=...)")
    p.add_argument("--single-task", action="store_true", default=None, help="train one model per task (baselines)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--global-jacobian", action="store_true", default=None,
                   help="torchrun: gradient aggregators aggregate the global Jacobian (as one process would)")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the model forward (backend: inductor by default, aot_eager, eager, ...)")


def config_from_args(args: argparse.Namespace) -> Any:
    """Flags (and ``--config FILE``) -> a :class:`mtlkit.engine.Config`; flags win over the file."""
    from mtlkit.engine import Config

    values: dict[str, Any] = {}
    for flag, (key, typ, _) in TRAIN_FLAGS.items():
        v = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if v is not None:
            values[key] = typ(v) if typ is _tasks else v
    if args.method_opt:
        values["method_options"] = parse_kv(args.method_opt, "--method-opt")
    if args.strategy_opt:
        values["strategy_options"] = parse_kv(args.strategy_opt, "--strategy-opt")
    if args.dataset_opt:
        values["dataset_options"] = parse_kv(args.dataset_opt, "--dataset-opt")
    if getattr(args, "arch_opt", None):
        values["arch_options"] = parse_kv(args.arch_opt, "--arch-opt")
    if args.weights:
        weights = parse_kv([args.weights], "--weights")
        bad = [k for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, int | float)]
        if bad:
            raise MtlkitError(f"--weights {bad[0]}={weights[bad[0]]!r}: a weight must be a number (TASK=W,...)")
        values["weights"] = {k: float(v) for k, v in weights.items()}
        values.setdefault("method", "fixed")
    if args.single_task:
        values["single_task"] = True
    if getattr(args, "global_jacobian", None):
        values["global_jacobian"] = True
    if getattr(args, "distill_opt", None):
        values["distill_options"] = parse_kv(args.distill_opt, "--distill-opt")
    if getattr(args, "feature_distance", None) is not None:
        opts = args.feature_distance.strip()
        values["feature_distance"] = parse_kv([opts], "--feature-distance") if opts not in ("", "on", "true") else True
    if getattr(args, "no_progress", False):
        values["progress"] = False
    if getattr(args, "compile", None) is not None:
        values["compile"] = args.compile
    for extra in ("dtme", "recon"):
        if getattr(args, extra, None) is not None or getattr(args, f"{extra}_opt", None):
            values[extra] = args_extra(args, extra)
    if args.config:
        return Config.from_yaml(args.config, values)
    return Config.from_dict(values)


def args_extra(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """``--dtme`` / ``--dtme on`` (defaults), ``--dtme rho=0.25,tokens=6`` and ``--dtme-opt key=value`` -> options."""
    items = [i for i in (getattr(args, name, None) or []) if i.strip().lower() not in ("", "on", "true")]
    return {**parse_kv(items, f"--{name}"), **parse_kv(getattr(args, f"{name}_opt", None), f"--{name}-opt")}


def check_names(cfg: Any) -> None:
    """Resolve every name before any data is generated or any training starts."""
    from mtlkit import balancing, strategies
    from mtlkit.data import DATASETS
    from mtlkit.engine._validate import check_environment
    from mtlkit.models import check_model
    from mtlkit.tasks import TASKS

    check_environment(cfg)  # device, --out, --baseline
    DATASETS.get(cfg.dataset)
    # model name, head, checkpoint file, patch divisibility (a network-only name fails here, before any data)
    check_model(cfg.model.name, cfg.image_size, head=cfg.head, patch_size=cfg.patch_size, pretrained=cfg.pretrained)
    for t in cfg.tasks or []:
        TASKS.get(t)
    from mtlkit.models.arch._build import split_options

    split_options(cfg.model.arch, cfg.model.arch_options)  # --arch name and --arch-opt keys
    if cfg.weights is None:
        balancing.get(cfg.method.name, **cfg.method_options)
    strategies.get(cfg.strategy.name, **cfg.strategy_options)
    if cfg.distill or cfg.distill_options or cfg.feature_distance:
        from mtlkit.engine._distill import check_options, check_probe_options

        check_options(cfg.distill, cfg.distill_options)
        check_probe_options(cfg.feature_distance)
    if cfg.transforms:
        from mtlkit.dtme import make_transforms

        make_transforms(cfg.transforms, cfg.iters, cfg.dataset)  # validates the --dtme / --recon options


def cmd_train(args: argparse.Namespace) -> int:
    from mtlkit.engine import Trainer, train_single_task_baselines

    cfg = config_from_args(args)
    check_names(cfg)
    if cfg.single_task:
        from mtlkit.data import build_dataset

        ds = build_dataset(cfg.dataset, "val", root=cfg.data_root, tasks=cfg.tasks, image_size=cfg.image_size,
                           **cfg.dataset_options)
        path = train_single_task_baselines(cfg.replace(single_task=False), list(ds.task_names))
        print(f"single-task baselines: {path}")
        print(json.dumps(json.loads(path.read_text())["test"], indent=2))
        return 0
    from mtlkit.engine._single_task import train_teachers

    train_teachers(cfg)  # --distill url / --feature-distance: the single-task teachers, trained when missing
    metrics = Trainer.from_config(cfg).fit(resume=args.resume)
    if metrics.get("skipped_steps"):
        print(f"mtlkit: warning: {metrics['skipped_steps']} step(s) of {metrics['iterations']} iterations skipped for "
              "non-finite losses or gradients (log.jsonl: \"skipped\")", file=sys.stderr)
    _print_metrics(metrics)
    print(f"run: {cfg.out}  (metrics.json, predictions.png, log.jsonl)")
    return 0


def _print_metrics(metrics: dict[str, Any]) -> None:
    for t, m in metrics["tasks"].items():
        vals = ", ".join(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, float))
        print(f"  {t:10s} {vals}")
    dm = metrics.get("delta_m")
    print(f"  Δm = {dm:+.2f}%" if dm is not None else "  Δm: no single-task baselines for this setting "
          "(train them with --single-task)")


# ----------------------------------------------------------------------------- other commands
def cmd_eval(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from mtlkit.data import build_dataset
    from mtlkit.engine import Config, evaluate, load_model
    from mtlkit.engine.trainer import resolve_device

    run = Path(args.run)
    if not run.is_dir():
        raise MtlkitError(f"run directory not found: {run}")
    cfg = Config.from_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else Config()
    device = resolve_device(args.device)
    model, _ = load_model(run, device)
    ds = build_dataset(cfg.dataset, args.split, root=cfg.data_root, tasks=list(model.heads.keys()),
                       image_size=cfg.image_size, **cfg.dataset_options)
    tasks = ds.make_tasks(list(model.heads.keys()))
    result = evaluate(model, DataLoader(ds, batch_size=args.batch_size), tasks, device, input_key=cfg.input_key)
    print(json.dumps(result, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mtlkit.engine.bench import SUITES, run_suite

    if args.suite == "claims":
        return _bench_claims(args)
    if args.suite not in SUITES:
        raise MtlkitError(f"unknown suite {args.suite!r}; valid suites: {', '.join([*SUITES, 'claims'])}")
    suite = SUITES[args.suite]
    if args.methods:
        suite = dataclasses.replace(suite, methods=_tasks(args.methods) or [])
    if args.seeds:
        suite = dataclasses.replace(suite, seeds=[int(s) for s in _tasks(args.seeds) or []])
    base: dict[str, Any] = {}
    if args.dataset:
        suite = dataclasses.replace(suite, dataset=args.dataset)
    if args.iters:
        base["iters"] = args.iters
    out = Path(args.out or f"runs/bench-{args.suite}")
    table = run_suite(suite, out, base, progress=not args.no_progress)
    print()
    print(table["markdown"])
    print(f"results: {out}/results.md, results.csv, results.json")
    for m in suite.methods:
        pred = out / "runs" / f"{m}-seed{suite.seeds[0]}" / "predictions.png"
        if pred.is_file():
            print(f"predictions: {pred}")
    return 0


def _bench_claims(args: argparse.Namespace) -> int:
    """``bench --suite claims``: the seeds' claims at CPU scale, with a computed verdict each."""
    from mtlkit.engine.claims import run_claims

    base: dict[str, Any] = {}
    if args.iters:
        base["iters"] = args.iters
    if args.pretrained:
        base["pretrained"] = args.pretrained
    out = Path(args.out or f"runs/claims-{args.scale}")
    seeds = None
    if args.seeds:
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise MtlkitError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    report = run_claims(out, args.scale, _tasks(args.claims), base, progress=not args.no_progress,
                        train=not args.report_only, seeds=seeds)
    from mtlkit.engine.claims import markdown

    print()
    print(markdown(report))
    print(f"results: {out}/claims.md, claims.json")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from mtlkit.analysis import PLOTTERS

    if getattr(args, "reference", None):  # the radar chart: per-task M_i of RUN ... against --reference
        from mtlkit.analysis import radar_chart

        out_dir = Path(args.out) if args.out else Path(args.run[0]) / "plots"
        for p in radar_chart(args.run, args.reference, out_dir, _tasks(args.labels), args.split):
            print(p)
        return 0
    if len(args.run) > 1:  # plots over several runs (e.g. the study's Fig. 6)
        return _analyze_runs(args)
    run = Path(args.run[0])
    if not run.is_dir():
        raise MtlkitError(f"run directory not found: {run}")
    out = Path(args.out) if args.out else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    names = [args.only] if args.only else PLOTTERS.names()
    written = []
    for name in names:
        written += PLOTTERS.get(name)(run, out)
    if not written:
        print(f"nothing to plot in {run} (record data with --grad-stats-every, --strategy selective or --dtme)")
    for p in written:
        print(p)
    return 0


def _analyze_runs(args: argparse.Namespace) -> int:
    """``mtlkit analyze RUN RUN ...``: the plots over several runs (e.g. the imbalance study's Fig. 6)."""
    from mtlkit.analysis import MULTI_PLOTTERS

    runs = [Path(r) for r in args.run]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise MtlkitError(f"run directory not found: {', '.join(missing)}")
    out = Path(args.out) if args.out else runs[0].parent / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in [args.only] if args.only else MULTI_PLOTTERS.names():
        written += MULTI_PLOTTERS.get(name)(runs, out)
    if not written:
        print("nothing to plot over these runs (record the feature distance with --feature-distance)")
    for p in written:
        print(p)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mtlkit.data import DATASETS

    if args.data_cmd == "list":
        for n in DATASETS.names():
            print(n)
        return 0
    if args.data_cmd == "preview":
        DATASETS.get(args.dataset)
        from mtlkit.data.synthetic import preview

        path = preview(args.dataset, args.out, n=args.n, root=args.data_root)
        print(path)
        return 0
    if args.data_cmd == "check":
        from mtlkit.data import check_dataset, format_problems

        problems = check_dataset(args.dataset, args.data_root, max_files=args.max_files)
        print(format_problems(args.dataset, args.data_root, problems, limit=args.limit))
        return 1 if problems else 0
    raise MtlkitError("usage: mtlkit data {list,preview,check}")


def cmd_methods(args: argparse.Namespace) -> int:
    from mtlkit.balancing import methods_table
    from mtlkit.engine import _distill  # noqa: F401  (registers URL's row)

    print(methods_table())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mtlkit.models.backbones._listing import check_table, models_table

    if args.check:
        name, path = args.check
        print(check_table(name, path, args.image_size))
        return 0
    print(models_table(args.image_size))
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from mtlkit.engine.grid import grid_search, parse_grid

    grid = parse_grid(args.grid)
    if not grid:
        raise MtlkitError("mtlkit grid needs at least one --grid TASK=W1,W2,... (e.g. --grid edge=1,10,50)")
    compare = [] if args.compare in ("", "none") else (_tasks(args.compare) or [])
    if args.out is None:
        args.out = "runs/grid"
    cfg = config_from_args(args)
    check_names(cfg)
    result = grid_search(cfg, grid, cfg.out, compare=compare, progress=cfg.progress)
    print(result["markdown"])
    print(f"results: {cfg.out}/grid.md, grid.json")
    return 0


PRETRAIN_FLAGS = {"--model": str, "--image-size": int, "--steps": int, "--batch-size": int, "--lr": float,
                  "--weight-decay": float, "--warmup-steps": int, "--mask-ratio": float, "--decoder-dim": int,
                  "--decoder-depth": int, "--decoder-heads": int, "--images": int, "--data-seed": int,
                  "--seed": int, "--log-every": int, "--objective": str, "--proj-dim": int, "--pred-dim": int}


def cmd_pretrain(args: argparse.Namespace) -> int:
    from mtlkit.engine.pretrain import run_from_args

    return run_from_args(args)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``reproduce``: a paper recipe's rows -> the table beside the published numbers (mtlkit.engine.reproduce)."""
    import yaml

    if args.list:
        from mtlkit.engine.reproduce import list_recipes

        for rid, path in list_recipes(args.recipes).items():
            r = yaml.safe_load(path.read_text())
            print(f"{rid:20} {len(r['rows']):3} rows  {r['source'].get('table', '')}: {r['source'].get('caption', '')}")
        return 0
    if not args.recipe:
        raise MtlkitError("mtlkit reproduce needs a recipe (e.g. dtme/tab7) or --list")
    from mtlkit.engine.reproduce import jobs_table, reproduce

    seeds = [int(s) for s in _tasks(args.seeds) or []] or None
    res = reproduce(args.recipe, args.out, small=args.small, data_root=args.data_root, pretrained=args.pretrained,
                    seeds=seeds, iters=args.iters, shard_spec=args.shard, dry_run=args.dry_run,
                    table_only=args.table_only, device=args.device, root=args.recipes, progress=not args.no_progress)
    if args.dry_run:
        print(jobs_table(res["mine"]))
    print()
    print(res["table"]["markdown"])
    print(f"table: {res['out']}/table.md, table.csv, table.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlkit", description="Multi-task learning for dense prediction.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a multi-task model (or the single-task baselines)")
    add_train_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint")
    p.add_argument("run")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="baselines + methods over seeds -> paper-style table")
    p.add_argument("--suite", default="quick")
    p.add_argument("--methods", help="comma-separated methods (override the suite's)")
    p.add_argument("--seeds", help="comma-separated seeds (override the suite's; claims: a subset of the scale's)")
    p.add_argument("--dataset")
    p.add_argument("--iters", type=int)
    p.add_argument("--out")
    p.add_argument("--scale", default="quick", help="claims suite: quick (synthetic NYUD) | quick-pascal | tiny")
    p.add_argument("--claims", help="claims suite: comma-separated claim ids (default: all)")
    p.add_argument("--pretrained", help="claims suite: backbone checkpoint every run starts from")
    p.add_argument("--report-only", action="store_true", help="claims suite: tabulate finished runs, train none")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("analyze", help="plots (PNG) from a run's logs, or over several runs (Figs. 4, 6)")
    p.add_argument("run", nargs="+", help="one run directory, or several for the plots over runs (radar chart: "
                   "runs and baselines, with --reference)")
    p.add_argument("--reference", help="radar chart of per-task M_i of the runs against these single-task "
                   "baselines (a baselines.json, its folder, or a run directory)")
    p.add_argument("--labels", help="radar chart: comma-separated names of the runs")
    p.add_argument("--split", default="test", choices=["val", "test"], help="radar chart: metrics of this split")
    p.add_argument("--out")
    p.add_argument("--only", help="one plot family")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    dsub.add_parser("list", help="registered datasets")
    q = dsub.add_parser("preview", help="PNG grid of images and all labels")
    q.add_argument("--dataset", default="synthetic-nyud")
    q.add_argument("--data-root")
    q.add_argument("--out", default="preview.png")
    q.add_argument("-n", type=int, default=4)
    q = dsub.add_parser("check", help="validate a real dataset tree and list every problem")
    q.add_argument("--dataset", required=True, help="nyud, pascal-context, taskonomy, replica or multimnist")
    q.add_argument("--data-root", required=True)
    q.add_argument("--max-files", type=int, help="decode at most N samples per split (all are checked to exist)")
    q.add_argument("--limit", type=int, default=200, help="print at most N problems")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("methods", help="table of balancing methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("models", help="model presets and backbone families with parameter counts")
    p.add_argument("--check", nargs=2, metavar=("NAME", "PATH"),
                   help="load checkpoint PATH into model NAME and print its missing / unexpected keys")
    p.add_argument("--image-size", type=int, default=224, help="input size the models are built for")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("grid", help="grid search over fixed loss weights (best validation Δm) vs AvgNorm's weights")
    add_train_args(p)
    p.add_argument("--grid", action="append", metavar="TASK=W1,W2,...",
                   help="weights to try for a task (repeatable; tasks not given keep weight 1)")
    p.add_argument("--compare", default="avgnorm",
                   help="methods whose average weights are reported beside the grid's (comma-separated; none)")
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("reproduce", help="run a paper recipe (configs/) and tabulate it beside the published numbers")
    p.add_argument("recipe", nargs="?", help="recipe id (e.g. dtme/tab7, see --list) or a recipe file")
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument("--data-root", help="root folder of the recipe's dataset")
    p.add_argument("--pretrained", help="checkpoint file, or a folder with one <timm name>.safetensors per checkpoint")
    p.add_argument("--small", action="store_true", help="CPU scale on the synthetic twin (the recipe's small section)")
    p.add_argument("--shard", metavar="I/N", help="run jobs I, I+N, ... (parallel processes / GPUs)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs, train nothing")
    p.add_argument("--table-only", action="store_true", help="tabulate finished jobs, train nothing")
    p.add_argument("--seeds", help="comma-separated seeds (override the recipe's)")
    p.add_argument("--iters", type=int, help="override every row's iterations (smoke runs)")
    p.add_argument("--device", help="auto, cpu, cuda:1, ... (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--out", help="output folder (default runs/reproduce/<paper>-<table>[-small])")
    p.add_argument("--recipes", help="recipe folder (default ./configs)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("pretrain", help="self-supervised pretraining on synthetic scenes (ViT: MAE, CNN: SimSiam)")
    for flag, typ in PRETRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, help="default: mtlkit.engine.pretrain.PretrainConfig")
    p.add_argument("--out", default="runs/pretrain", help="folder of the checkpoint and its provenance JSON")
    p.add_argument("--force", action="store_true", help="retrain even when --out holds the same run's checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MtlkitError as e:
        print(f"mtlkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
