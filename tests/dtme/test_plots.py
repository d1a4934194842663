import matplotlib.image
import pytest

from mtlkit.analysis import PLOTTERS
from mtlkit.dtme import analyze_token_space, parameter_conflicts
from mtlkit.dtme._plots import conflict_bars_figure, conflict_change_figure
from mtlkit.dtme._recon import ParameterConflicts

from .helpers import KNOWN_NULL_RATES, KNOWN_RANGE_RATES, constructed_model, tiny_model


def png_shape(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path).shape


def test_conflict_bars_show_the_rates_and_mark_the_chosen_layers():
    model, tasks, batches = constructed_model()
    a = analyze_token_space(model, tasks, batches)
    a.expansion = {"tm_layers": [0, 2], "te_layers": [1]}
    ax = conflict_bars_figure(a).axes[0]
    range_bars, null_bars = ax.containers
    assert [b.get_height() for b in range_bars] == pytest.approx(KNOWN_RANGE_RATES)
    assert [b.get_height() for b in null_bars] == pytest.approx(KNOWN_NULL_RATES)
    assert [i for i, b in enumerate(range_bars) if b.get_hatch()] == [0, 2]
    assert [i for i, b in enumerate(null_bars) if b.get_hatch()] == [1]
    labels = sorted((t.get_text(), round(t.get_position()[0], 2)) for t in ax.texts)
    assert labels == [("TE", 1.2), ("TM", -0.2), ("TM", 1.8)]  # above each chosen layer's bar


def test_conflict_change_figure_shows_start_and_end_per_space():
    model, tasks, batches = constructed_model()
    start = analyze_token_space(model, tasks, batches)
    start.expansion = {"tm_layers": [0], "te_layers": [1]}
    end = analyze_token_space(model, tasks, batches)
    end.layers[0].range_rate = 0.25
    ax = conflict_change_figure(start, end).axes[0]
    heights = [[b.get_height() for b in c] for c in ax.containers]
    assert heights[0] == pytest.approx(KNOWN_RANGE_RATES) and heights[1][0] == 0.25
    assert heights[2] == pytest.approx(KNOWN_NULL_RATES)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0\nTM", "1\nTE", "2\n", "3\n"]


def test_token_space_plots_of_a_run(tasks, batches, tmp_path):
    a = analyze_token_space(tiny_model(tasks), tasks, batches, num_batches=2)
    a.expansion = {"tm_layers": [1, 2], "te_layers": [0]}
    a.save(tmp_path / "token_space.json")
    files = PLOTTERS.get("tokens")(tmp_path, tmp_path / "plots")
    assert [f.name for f in files] == ["token_conflicts.png", "token_spectrum.png", "token_pair_conflicts.png"]
    h, w, _ = png_shape(files[0])
    assert w == int(max(5.0, 0.6 * 4 + 2) * 110) and h == int(3.6 * 110)
    a.save(tmp_path / "token_space_end.json")
    files = PLOTTERS.get("tokens")(tmp_path, tmp_path / "plots")
    assert files[-1].name == "token_conflict_change.png" and png_shape(files[-1])[0] == int(3.8 * 110)


def test_recon_plot(tasks, batches, tmp_path):
    c = parameter_conflicts(tiny_model(tasks), tasks, batches, num_batches=2)
    c.layers = [3]
    c.save(tmp_path / "recon_conflicts.json")
    assert ParameterConflicts.load(tmp_path / "recon_conflicts.json").rates == c.rates
    files = PLOTTERS.get("recon")(tmp_path, tmp_path)
    assert len(files) == 1 and png_shape(files[0])[:2] == (int(3.4 * 110), int(max(5.0, 0.5 * 4 + 2) * 110))


def test_runs_without_data_give_no_plots(tmp_path):
    assert PLOTTERS.get("tokens")(tmp_path, tmp_path) == []
    assert PLOTTERS.get("recon")(tmp_path, tmp_path) == []
