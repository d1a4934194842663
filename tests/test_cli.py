import pytest

from mtlkit.cli import main, parse_kv


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--dataset", "nope"], "valid datasets"),
        (["train", "--model", "huge"], "valid models"),
        (["train", "--method", "magic"], "valid methods"),
        (["train", "--strategy", "magic"], "valid strategys"),
        (["train", "--tasks", "semseg,colour"], "valid tasks"),
        (["train", "--iters", "-3"], "iters"),
        (["train", "--image-size", "60"], "divisible"),
        (["train", "--method", "equal", "--method-opt", "c=0.4"], "no option"),
        (["bench", "--suite", "nope"], "valid suites"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, needle, capsys):
    if argv[0] == "train" and "--dataset" not in argv:
        argv = [*argv, "--dataset", "tiny-random", "--image-size", argv[-1] if argv[-2] == "--image-size" else "16"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("mtlkit: error:") and "\n" not in err


def test_task_not_in_dataset(capsys, tmp_path):
    code = main(["train", "--dataset", "tiny-random", "--tasks", "saliency", "--image-size", "16",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2
    assert "saliency" in capsys.readouterr().err


def test_parse_kv_types():
    assert parse_kv(["c=0.4", "mode=last,n=3"], "x") == {"c": 0.4, "mode": "last", "n": 3}


def test_train_and_eval_end_to_end(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--dataset", "tiny-random", "--image-size", "16", "--iters", "3", "--batch-size", "4",
                 "--tasks", "semseg,depth", "--out", str(run), "--no-progress"]) == 0
    assert (run / "metrics.json").is_file()
    assert main(["eval", str(run), "--split", "val"]) == 0
    assert '"primary"' in capsys.readouterr().out
