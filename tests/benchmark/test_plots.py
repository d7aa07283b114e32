"""The benchmark's plots from constructed rows: PNG files where methods have the values, none where not."""
from PIL import Image

from cflight.benchmark.plots import plot_all


def test_plots_are_pngs_and_skipped_without_values(tmp_path):
    rows = [{"method": "a", "validity": 0.5, "l2": 1.0, "fid": 3.0, "seconds_per_image": 0.01},
            {"method": "b", "validity": 1.0, "l2": 2.0, "fid": None, "seconds_per_image": 5.0}]
    made = plot_all(rows, str(tmp_path))
    assert sorted(made) == ["fid_vs_l2", "time_per_image", "validity_vs_l2"]
    for path in made.values():
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 100
    none = plot_all([{"method": "c", "validity": 1.0, "l2": None, "fid": None, "seconds_per_image": None}],
                    str(tmp_path / "empty"))
    assert none == {} and not list((tmp_path / "empty").iterdir())


def test_validity_plot_draws_the_oracles_verdict_beside_the_models(tmp_path):
    """Hollow markers at the oracle validity: the plot differs from one without it (both drawn from the rows)."""
    import numpy as np

    base = [{"method": "a", "validity": 1.0, "l2": 1.0}, {"method": "b", "validity": 0.9, "l2": 2.0}]
    with_oracle = [dict(r, oracle_validity=v) for r, v in zip(base, (0.2, 0.85))]
    plain = plot_all(base, str(tmp_path / "plain"))["validity_vs_l2"]
    judged = plot_all(with_oracle, str(tmp_path / "judged"))["validity_vs_l2"]
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(judged)))


def test_labels_stay_inside_the_axes(tmp_path, monkeypatch):
    from cflight.benchmark import plots

    assert plots._label_side(1.0, [1.0, 2.0, 5.0]) == (5, "left")
    assert plots._label_side(4.0, [1.0, 2.0, 5.0]) == (-5, "right")  # the right quarter of the range
    assert plots._label_side(3.0, [3.0, 3.0]) == (5, "left")  # one distance for all
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    rows = [{"method": name, "l2": l2, "validity": v} for name, l2, v in
            [("svce_l1_5_radius_large", 1.0, 0.2), ("diffae_re_long_name", 9.0, 0.9), ("acre", 5.0, 0.5)]]
    plots.scatter(rows, "l2", "validity", "l2", "validity", "t", str(tmp_path / "s.png"))
    (fig,) = drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    frame = ax.get_window_extent(renderer)
    for text in ax.texts:
        box = text.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, text.get_text()
    plots._pyplot().close(fig)
