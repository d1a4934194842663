from mtlkit.analysis import PLOTTERS
from mtlkit.dtme import analyze_token_space, parameter_conflicts

from .helpers import tiny_model


def test_token_space_plots(tasks, batches, tmp_path):
    a = analyze_token_space(tiny_model(tasks), tasks, batches, num_batches=2)
    a.expansion = {"tm_layers": [1, 2], "te_layers": [0]}
    a.save(tmp_path / "token_space.json")
    files = PLOTTERS.get("tokens")(tmp_path, tmp_path / "plots")
    assert [f.name for f in files] == ["token_conflicts.png", "token_spectrum.png", "token_pair_conflicts.png"]
    assert all(f.stat().st_size > 1000 for f in files)


def test_recon_plot(tasks, batches, tmp_path):
    c = parameter_conflicts(tiny_model(tasks), tasks, batches, num_batches=2)
    c.layers = [3]
    c.save(tmp_path / "recon_conflicts.json")
    files = PLOTTERS.get("recon")(tmp_path, tmp_path)
    assert len(files) == 1 and files[0].stat().st_size > 1000


def test_runs_without_data_give_no_plots(tmp_path):
    assert PLOTTERS.get("tokens")(tmp_path, tmp_path) == []
    assert PLOTTERS.get("recon")(tmp_path, tmp_path) == []
