"""Figures of a continual run (continual/plots.py): identical curves stay visible, cell labels are readable."""

from caopd_pl.continual import plots


def _captured(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    return figures


def test_tasks_with_identical_values_are_drawn_apart(monkeypatch, tmp_path):
    figures = _captured(monkeypatch)
    same = [[0.5, 0.5], [0.7, 0.7]]  # two tasks, equal at every stage
    plots.task_curves({"accuracy": same}, ["base", "a"], ["a", "b"], tmp_path / "curves.png", num_trainable=1)
    first, second = figures[0].axes[0].get_lines()
    assert list(first.get_ydata()) == list(second.get_ydata())
    assert all(x1 < x2 for x1, x2 in zip(first.get_xdata(), second.get_xdata()))  # side by side, not on top
    assert first.get_marker() != second.get_marker() and second.get_linestyle() == "--"  # b is held out


def test_heatmap_cell_labels_are_readable(monkeypatch, tmp_path):
    figures = _captured(monkeypatch)
    plots.matrix_heatmap([[0.25, None]], ["base"], ["a", "b"], tmp_path / "heatmap.png", "accuracy", 1)
    labels = [text for text in figures[0].axes[0].texts if text.get_text() in ("0.25", "n/a")]
    assert len(labels) == 2 and all(text.get_fontsize() >= 12 for text in labels)
