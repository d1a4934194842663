"""Malformed CLI / YAML inputs: each exits with code 2 and one line naming the key, before any training
(no run directory is created)."""

from __future__ import annotations

import pytest

from mtlkit.cli import main as cli_main

# (case, extra CLI arguments or {"yaml": text}, a word the message must contain)
CASES = [
    ("yaml syntax error", {"yaml": "run: {iters: 3\n"}, "not valid YAML"),
    ("yaml top level list", {"yaml": "- a\n"}, "mapping"),
    ("yaml section list", {"yaml": "optim: [1]\n"}, "optim"),
    ("yaml iters string", {"yaml": "run: {iters: abc}\n"}, "iters="),
    ("yaml iters true", {"yaml": "run: {iters: true}\n"}, "iters="),
    ("yaml lr string", {"yaml": "optim: {lr: fast}\n"}, "lr="),
    ("yaml tasks int", {"yaml": "data: {tasks: 5}\n"}, "tasks="),
    ("yaml duplicate tasks", {"yaml": "data: {tasks: [semseg, semseg]}\n"}, "more than once"),
    ("yaml dataset int", {"yaml": "data: {name: 5}\n"}, "dataset="),
    ("yaml eval_every true", {"yaml": "run: {eval_every: true}\n"}, "eval_every="),
    ("yaml seed string", {"yaml": "run: {seed: x}\n"}, "seed="),
    ("yaml num_workers -1", {"yaml": "data: {num_workers: -1}\n"}, "num_workers="),
    ("yaml weights string", {"yaml": "method: {weights: {semseg: abc}}\n"}, "weights.semseg="),
    ("yaml weights list", {"yaml": "method: {weights: [1, 2]}\n"}, "weights="),
    ("yaml device int", {"yaml": "run: {device: 3}\n"}, "device="),
    ("yaml out list", {"yaml": "run: {out: [a]}\n"}, "out="),
    ("yaml options string", {"yaml": "method: {options: abc}\n"}, "method_options"),
    ("yaml poly_power negative", {"yaml": "optim: {poly_power: -1}\n"}, "poly_power="),
    ("yaml max_consecutive_skipped", {"yaml": "run: {max_consecutive_skipped: x}\n"}, "max_consecutive_skipped="),
    ("yaml eval_batch_size 0", {"yaml": "data: {eval_batch_size: 0}\n"}, "eval_batch_size="),
    ("yaml unknown key", {"yaml": "run: {iter: 3}\n"}, "unknown key"),
    ("patch size 0", ["--patch-size", "0"], "patch_size="),
    ("patch size negative", ["--patch-size=-2"], "patch_size="),
    ("device cuda without CUDA", ["--device", "cuda"], "device="),
    ("device garbage", ["--device", "gpu7"], "device="),
    ("weights not a number", ["--weights", "semseg=abc"], "weights"),
    ("weights unknown task c=abc", ["--weights", "c=abc"], "weights"),
    ("weights unknown task", ["--tasks", "semseg", "--weights", "depth=1"], "not trained"),
    ("weights negative", ["--weights=semseg=-1"], "weights.semseg="),
    ("weights inf", ["--weights", "semseg=inf"], "weights"),
    ("out is a file", "OUTFILE", "existing file"),
    ("batch larger than the split", ["--batch-size", "64"], "batch_size=64"),
    ("duplicate tasks", ["--tasks", "semseg,semseg"], "more than once"),
    ("unknown task", ["--tasks", "foo"], "foo"),
    ("missing baseline file", ["--baseline", "nope.json"], "baseline="),
    ("image size 0", ["--image-size", "0"], "image_size="),
    ("num workers negative", ["--num-workers=-1"], "num_workers="),
    ("seed negative", ["--seed=-1"], "seed="),
    ("grad stats negative", ["--grad-stats-every=-1"], "grad_stats_every="),
    ("unknown method", ["--method", "nope"], "nope"),
    ("unknown strategy", ["--strategy", "nope"], "nope"),
    ("lr inf", ["--lr", "inf"], "lr="),
    ("grad clip 0", ["--grad-clip", "0"], "grad_clip="),
    ("grad clip nan", ["--grad-clip", "nan"], "grad_clip="),
    ("lr 0", ["--lr", "0"], "lr="),
    ("iters 0", ["--iters", "0"], "iters="),
]


@pytest.mark.parametrize("case, extra, word", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_one_line_exit_2(tmp_path, capsys, case, extra, word):
    out = tmp_path / "run"
    base = ["train", "--dataset", "tiny-random", "--image-size", "16", "--model", "micro", "--batch-size", "4",
            "--no-progress"]
    if isinstance(extra, dict):  # the YAML file holds the bad value; the flags do not override it
        (tmp_path / "c.yaml").write_text(extra["yaml"])
        argv = ["train", "--config", str(tmp_path / "c.yaml"), "--no-progress"]
        if "out:" not in extra["yaml"]:
            argv += ["--out", str(out)]
        if "name:" not in extra["yaml"]:
            argv += ["--dataset", "tiny-random", "--image-size", "16", "--batch-size", "4"]
        if "iters" not in extra["yaml"]:
            argv += ["--iters", "1"]
    elif extra == "OUTFILE":
        (tmp_path / "file").write_text("x")
        argv = [*base, "--iters", "1", "--out", str(tmp_path / "file")]
    else:
        argv = [*base, "--out", str(out), *(["--iters", "1"] if "--iters" not in extra else []), *extra]
        argv = [a if a != "nope.json" else str(tmp_path / "nope.json") for a in argv]
    code = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and word in err[0], err
    assert not (out / "log.jsonl").exists()  # nothing trained

