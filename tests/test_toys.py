"""The toy losses of the Learn page and the trajectories of twophase's optimizers on them."""

import math

import numpy as np
import pytest
import torch

from twophase import teaching
from twophase.plots import arm_label
from twophase.errors import ConfigError


# ------------------------------------------------------------------ one parameter
@pytest.mark.parametrize("units,seed", [(1, 0), (3, 1), (10, 0), (25, 7)])
def test_toy1d_derivatives_match_finite_differences(units, seed):
    inputs, targets = teaching.toy1d_data(units, seed)
    p = np.linspace(-3.0, 3.0, 61)
    h = 1e-5
    fd1 = (teaching.toy1d_loss(p + h, inputs, targets) - teaching.toy1d_loss(p - h, inputs, targets)) / (2 * h)
    fd2 = (teaching.toy1d_grad(p + h, inputs, targets) - teaching.toy1d_grad(p - h, inputs, targets)) / (2 * h)
    np.testing.assert_allclose(teaching.toy1d_grad(p, inputs, targets), fd1, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(teaching.toy1d_curvature(p, inputs, targets), fd2, rtol=1e-6, atol=1e-9)
    # and the second difference of the loss itself (independent of toy1d_grad)
    h2 = 1e-4
    fd2_loss = (teaching.toy1d_loss(p + h2, inputs, targets) - 2 * teaching.toy1d_loss(p, inputs, targets)
                + teaching.toy1d_loss(p - h2, inputs, targets)) / h2**2
    np.testing.assert_allclose(teaching.toy1d_curvature(p, inputs, targets), fd2_loss, rtol=1e-4, atol=1e-6)


def test_toy1d_derivatives_match_autograd():
    inputs, targets = teaching.toy1d_data(7, 3)
    x, t = torch.tensor(inputs), torch.tensor(targets)

    def loss(p):
        return ((torch.tanh(p * x) - t) ** 2).mean()

    for p0 in (-2.0, -0.3, 0.4, 1.7):
        p = torch.tensor(p0, dtype=torch.float64)
        assert float(loss(p)) == pytest.approx(float(teaching.toy1d_loss(p0, inputs, targets)), rel=1e-12)
        assert float(torch.func.grad(loss)(p)) == pytest.approx(float(teaching.toy1d_grad(p0, inputs, targets)),
                                                                rel=1e-10, abs=1e-14)
        assert float(torch.func.hessian(loss)(p)) == pytest.approx(
            float(teaching.toy1d_curvature(p0, inputs, targets)), rel=1e-10, abs=1e-14)


def test_toy1d_data_is_seeded_and_in_range():
    a_in, a_t = teaching.toy1d_data(12, 4)
    b_in, b_t = teaching.toy1d_data(12, 4)
    np.testing.assert_array_equal(a_t, b_t)
    assert not np.array_equal(a_t, teaching.toy1d_data(12, 5)[1])
    assert np.all((a_t > 0) & (a_t < 1))
    assert np.all((a_in >= 0.5) & (a_in <= 2.0))
    np.testing.assert_array_equal(a_in, b_in)
    with pytest.raises(ValueError, match="units"):
        teaching.toy1d_data(0, 0)


def _hand_borders(x: float, t: float) -> tuple[float, float]:
    """Borders of the non-convex stretches of (tanh(x p) - t)^2, worked out by hand.

    With u = tanh(x p): L'' = 2 x^2 (1 - u^2) (1 - 3 u^2 + 2 t u), negative exactly when
    3 u^2 - 2 t u - 1 > 0, i.e. u < (t - sqrt(t^2 + 3)) / 3 or u > (t + sqrt(t^2 + 3)) / 3.
    """
    root = math.sqrt(t * t + 3.0)
    return math.atanh((t - root) / 3.0) / x, math.atanh((t + root) / 3.0) / x


@pytest.mark.parametrize("x,t", [(1.0, 0.5), (2.0, 0.1), (0.75, 0.9)])
def test_shaded_regions_of_a_single_unit_are_where_the_hand_calculation_puts_them(x, t):
    lo, hi = _hand_borders(x, t)
    intervals = teaching.nonconvex_intervals(np.array([x]), np.array([t]), -3.0, 3.0)
    assert len(intervals) == 2
    (a0, a1), (b0, b1) = intervals
    assert a0 == -3.0 and b1 == 3.0
    assert a1 == pytest.approx(lo, abs=1e-9)
    assert b0 == pytest.approx(hi, abs=1e-9)
    # the hand-checked case t = 0.5, x = 1: u = (0.5 -+ sqrt(3.25)) / 3 = -0.43426, 0.76759,
    # so non-convex below p = atanh(-0.43426) = -0.46513 and above atanh(0.76759) = 1.01444
    if (x, t) == (1.0, 0.5):
        assert a1 == pytest.approx(-0.46513, abs=1e-5)
        assert b0 == pytest.approx(1.01444, abs=1e-5)
    # the single minimum p* = atanh(t) / x lies in the convex stretch between them
    (minimum,) = teaching.toy1d_minima(np.array([x]), np.array([t]))
    assert minimum == pytest.approx(math.atanh(t) / x, abs=1e-9)
    assert a1 < minimum < b0


def test_downhill_path_peaks_at_the_border_of_the_shading():
    inputs, targets = teaching.toy1d_data(10, 0)
    path = teaching.toy1d_descent_path(-2.5, inputs, targets)
    intervals = teaching.nonconvex_intervals(inputs, targets)
    # the walk goes right, rises through the left non-convex stretch and peaks at its end
    border = intervals[0][1]
    k = path["peak"]
    assert 0 < k < len(path["p"]) - 1
    assert path["p"][k] == pytest.approx(border, abs=0.01)
    assert np.all(np.diff(path["grad_norm"][: k + 1]) >= 0)
    assert np.all(np.diff(path["grad_norm"][k:]) <= 0)
    assert np.all(np.diff(path["loss"]) <= 0)
    (minimum,) = teaching.toy1d_minima(inputs, targets)
    assert path["p"][-1] == pytest.approx(minimum, abs=0.01)


def test_toy1d_figure_shades_every_nonconvex_stretch():
    inputs, targets = teaching.toy1d_data(10, 0)
    intervals = teaching.nonconvex_intervals(inputs, targets)
    fig = teaching.toy1d_figure(10, 0, -2.5)
    shapes = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(shapes) == len(intervals) == 2
    for shape, (lo, hi) in zip(shapes, intervals):
        assert (shape.x0, shape.x1) == pytest.approx((lo, hi))


# ------------------------------------------------------------------ two parameters
@pytest.mark.parametrize("name", list(teaching.SURFACES))
@pytest.mark.parametrize("c", [0.4, 0.6])
def test_surface_derivatives_match_autograd(name, c):
    for point in ([0.3, 0.8], [-1.0, 2.0], [1.2, -0.4], [2.1, 1.7]):
        w = torch.tensor(point, dtype=torch.float64)
        H = torch.func.hessian(lambda v: teaching.surface_loss(name, v, c))(w)
        g = torch.func.grad(lambda v: teaching.surface_loss(name, v, c))(w)
        loss, h11, h12, h22 = teaching.surface_hessian(name, point[0], point[1], c)
        value, grad = teaching.surface_value_and_grad(name, point, c)
        assert float(loss) == pytest.approx(float(teaching.surface_loss(name, w, c)), rel=1e-12, abs=1e-15)
        assert value == pytest.approx(float(loss), rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(grad, g.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose([h11, h12, h22], [H[0, 0], H[0, 1], H[1, 1]], rtol=1e-10, atol=1e-12)
        lo, hi = teaching.hessian_eigenvalues(name, point, c)
        np.testing.assert_allclose([lo, hi], torch.linalg.eigvalsh(H).numpy(), rtol=1e-10, atol=1e-12)


def test_valley_shading_is_above_the_hand_derived_curve():
    # Hessian of (1-a)^2 + k (b-a^2)^2: det = 4k + 8k^2 a^2 - 8k^2 b, trace > 0, so it is
    # not positive definite exactly where b >= a^2 + 1/(2k).
    grid = teaching.surface_grid("valley", n=101)
    A, B = np.meshgrid(grid["w1"], grid["w2"])
    boundary = A**2 + 1.0 / (2.0 * teaching.VALLEY_STEEPNESS)
    clear = np.abs(B - boundary) > 1e-9
    expected = B >= boundary
    np.testing.assert_array_equal(grid["nonconvex"][clear], expected[clear])
    assert grid["nonconvex"].any() and not grid["nonconvex"].all()
    assert grid["loss"].shape == (101, 101)


def test_tanh_family_has_the_teacher_as_minimum_and_more_minima_at_large_c():
    for c in (0.4, 0.5, 0.6):
        value, grad = teaching.surface_value_and_grad("tanh-family", teaching.TANH_TEACHER, c)
        assert value == 0.0 and np.all(grad == 0.0)
        assert teaching.hessian_eigenvalues("tanh-family", teaching.TANH_TEACHER, c)[0] > 0
    low = teaching.local_minima("tanh-family", 0.4)
    high = teaching.local_minima("tanh-family", 0.6)
    assert [(round(a, 3), round(b, 3)) for a, b, _ in low] == [(1.0, 0.5)]
    assert len(high) >= 3
    assert any(abs(a - 1.0) < 1e-9 and abs(b - 0.5) < 1e-9 for a, b, _ in high)
    # the extra minima are real: worse than the teacher, and convex around them
    for a, b, loss in high:
        if (round(a, 3), round(b, 3)) != (1.0, 0.5):
            assert loss > 1e-3


# ------------------------------------------------------------------ trajectories
def test_two_phase_switches_and_ends_at_the_valley_minimum():
    trajs = teaching.trajectories("valley", (-1.5, 2.8), steps=80, lr=0.05, tolerance=0.9)
    assert list(trajs) == list(teaching.ARMS)
    two = trajs["two-phase"]
    s = two.switch_index
    assert s is not None and 1 <= s < two.steps
    assert two.peak_index is not None and 1 <= two.peak_index <= s
    assert two.phase[1 : s + 1] == ("adam",) * s
    assert set(two.phase[s + 1 :]) == {"cg"}
    # the paper's rule, checked on the recorded norms: first step at or below 0.9 x running max
    norms = two.grad_norm
    for k in range(1, s):
        assert norms[k] > 0.9 * norms[1 : k + 1].max()
    assert norms[s] <= 0.9 * norms[1 : s + 1].max()
    assert two.threshold[s] == pytest.approx(0.9 * norms[1 : s + 1].max())
    np.testing.assert_allclose(two.points[-1], [1.0, 1.0], atol=1e-6)
    assert two.loss[-1] < 1e-10
    # Adam alone is the very same Adam up to the switch, and never switches
    adam = trajs["adam"]
    assert adam.switch_index is None and set(adam.phase[1:]) == {"adam"}
    np.testing.assert_array_equal(adam.points[: s + 1], two.points[: s + 1])
    assert adam.evals[-1] == adam.steps
    cg = trajs["cg"]
    assert set(cg.phase[1:]) == {"cg"} and cg.switch_index is None
    assert all(st in ("ok", "restarted", "converged", "line_search_failed", "non_finite") for st in cg.status[1:])
    for tr in trajs.values():
        assert tr.points.shape == (81, 2) and tr.loss.shape == (81,) and np.all(np.diff(tr.evals) >= 0)
        np.testing.assert_array_equal(tr.points[0], [-1.5, 2.8])


def test_trajectories_are_pure_functions_of_their_arguments():
    a = teaching.trajectories("tanh-family", (-1.0, 2.0), c=0.55, steps=30)
    b = teaching.trajectories("tanh-family", (-1.0, 2.0), c=0.55, steps=30)
    for arm in teaching.ARMS:
        np.testing.assert_array_equal(a[arm].points, b[arm].points)
        np.testing.assert_array_equal(a[arm].evals, b[arm].evals)
        assert a[arm].switch_index == b[arm].switch_index


def test_cg_alone_can_end_in_a_local_minimum_where_two_phase_does_not():
    # A hand-picked start at C = 0.6 (the extra minima exist): CG from the start ends in the local
    # minimum near (0.38, 0.84), stops there ("converged" once no lower loss can be found), while
    # two-phase reaches the teacher. This is one start, not a claim about starts in general.
    trajs = teaching.trajectories("tanh-family", (-1.0, 2.0), c=0.6, steps=40)
    cg, two = trajs["cg"], trajs["two-phase"]
    np.testing.assert_allclose(cg.points[-1], [0.379, 0.836], atol=2e-3)
    assert cg.loss[-1] > 1e-2 and cg.status[-1] == "converged"
    assert teaching.hessian_eigenvalues("tanh-family", cg.points[-1], 0.6)[0] > 0
    np.testing.assert_allclose(two.points[-1], teaching.TANH_TEACHER, atol=1e-6)


def test_switch_options_reach_the_rule():
    late = teaching.trajectories("valley", (-1.5, 2.8), steps=40, min_epochs=12)["two-phase"]
    assert late.switch_index is not None and late.switch_index >= 12
    never = teaching.trajectories("valley", (-1.5, 2.8), steps=20, tolerance=0.5, min_epochs=30)["two-phase"]
    assert never.switch_index is None and set(never.phase[1:]) == {"adam"}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="surface"):
        teaching.trajectories("saddle", (0.0, 0.0))
    with pytest.raises(ConfigError, match="tolerance"):
        teaching.trajectories("valley", (0.0, 0.0), tolerance=1.5)
    with pytest.raises(ValueError, match="start"):
        teaching.trajectories("valley", (0.0, float("nan")))
    with pytest.raises(ValueError, match="steps"):
        teaching.trajectories("valley", (0.0, 0.0), steps=0)
    with pytest.raises(ValueError, match="lr"):
        teaching.trajectories("valley", (0.0, 0.0), lr=-1.0)
    with pytest.raises(ValueError, match="n must"):
        teaching.surface_grid("valley", n=3)


def test_two_dimensional_figures_show_shading_paths_and_switch():
    trajs = teaching.trajectories("valley", (-1.5, 2.8), steps=40)
    grid = teaching.surface_grid("valley", n=60)
    fig = teaching.surface_figure("valley", grid, trajs, step=10, pick_grid=11)
    names = [t.name for t in fig.data]
    assert any(n and n.startswith("not convex") for n in names) and "loss" in names
    assert fig.layout.images[0].source == teaching.figures.surface_image(grid)  # the contours and the shading
    switch = [t for t in fig.data if t.name and t.name.startswith("switch to CG")]
    assert len(switch) == 1
    s = trajs["two-phase"].switch_index
    assert tuple(switch[0].x) == (trajs["two-phase"].points[s, 0],)
    # paths are cut at the walked step
    two = [t for t in fig.data if t.name == "two-phase"][0]
    assert len(two.x) == 11
    curves = teaching.trajectory_curves_figure(trajs, step=10, x="evals")
    assert len(curves.data) >= 6


def test_the_map_keeps_paths_in_view_or_says_where_they_went_and_titles_do_not_collide():
    # defect 18: paths left the plotted box; the curves' "switch" label sat on the "Loss" title; a
    # subplot title of the one-weight figure was cut
    from twophase import teaching

    name = "tanh-family"
    surf = teaching.SURFACES[name]
    (a0, a1), (b0, b1) = surf.box
    trajs = teaching.trajectories(name, surf.start, c=0.5, steps=100, lr=surf.lr, tolerance=0.9)
    pts = np.concatenate([t.points for t in trajs.values()])
    assert ((pts[:, 0] > a1) | (pts[:, 1] > b1) | (pts[:, 0] < a0) | (pts[:, 1] < b0)).any()  # the defaults leave it
    fig = teaching.surface_figure(name, teaching.surface_grid(name, 0.5, n=31), trajs)
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    notes = [a for a in fig.layout.annotations if a.name == "off the map"]
    assert inside.all() or (len(notes) == 1 and "leaves the map" in notes[0].text)
    assert x1 - x0 <= 2 * (a1 - a0) + 1e-9 and y1 - y0 <= 2 * (b1 - b0) + 1e-9  # never mostly empty
    far = teaching.trajectories(name, surf.start, c=0.5, steps=300, lr=0.2, tolerance=0.9)  # one runs to 12
    fig = teaching.surface_figure(name, teaching.surface_grid(name, 0.5, n=31), far)
    [note] = [a for a in fig.layout.annotations if a.name == "off the map"]
    assert max(len(line) for line in note.text.split("<br>")) <= 40  # lines that fit the map at 1280 px
    curves = teaching.trajectory_curves_figure(trajs)
    titles = [a for a in curves.layout.annotations if a.text in ("Loss", "Gradient norm")]
    switch = [a for a in curves.layout.annotations if a.text == "switch"]
    assert titles and switch and all(s.y == 0 for s in switch)  # at the foot of the line, not up by the titles
    one = teaching.toy1d_figure(10, 0, -2.5)
    assert all(len(a.text) <= 40 for a in one.layout.annotations if a.yref == "paper" and a.y == 1.0)


def test_the_maps_picture_shades_the_non_convex_region_and_draws_contour_lines():
    # the map's background is one PNG (a heatmap and a contour trace made each step of the walk
    # slow to draw): orange where the Hessian is not positive definite, lines at round loss values
    import base64
    import io

    from PIL import Image

    grid = teaching.surface_grid("valley", n=120)
    uri = teaching.figures.surface_image(grid)
    png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    rgba = np.asarray(png.convert("RGBA"), dtype=float)[::-1]  # rows again as the grid's (w2 upwards)
    assert rgba.shape == (120, 120, 4)
    shaded = grid["nonconvex"]
    assert 0.1 < shaded.mean() < 0.9
    lines = rgba[..., 3] > 200
    assert 0.02 < lines.mean() < 0.4  # lines, not a fill
    # off the lines (and their anti-aliased edges): orange at the shading's alpha where not convex,
    # transparent where convex
    orange = (np.abs(rgba[..., 3] - 255 * 0.20) <= 2) & (np.abs(rgba[..., :3] - [255, 127, 14]) <= 2).all(axis=-1)
    clear = rgba[..., 3] == 0
    assert orange[shaded].mean() > 0.6 and not orange[~shaded].any()
    assert clear[~shaded].mean() > 0.6 and not clear[shaded].any()
    # a line lies where log10 loss crosses a round value: every row crossing one has a line pixel
    z = np.log10(grid["loss"] + 1e-4)
    step = teaching.figures._nice_step(z.max() - z.min(), teaching.figures.CONTOUR_LINES)
    crossing = np.floor(z[:, 1:] / step) != np.floor(z[:, :-1] / step)
    ink = ~orange & ~clear
    near = ink[:, 1:] | ink[:, :-1]
    assert near[crossing].mean() > 0.9


def test_the_walk_along_the_paths_is_one_frame_per_step_played_in_the_browser():
    name = "valley"
    trajs = teaching.trajectories(name, (-1.5, 2.8), steps=40)
    fig = teaching.surface_figure(name, teaching.surface_grid(name, n=40), trajs, walk=True)
    assert [f.name for f in fig.frames] == [str(k) for k in range(41)]
    slider = fig.layout.sliders[0]
    assert slider.steps[slider.active].label == "40"
    data = list(fig.data)
    for k in (0, 7, 40):
        frame = fig.frames[k]
        for arm, tr in trajs.items():
            path = frame.data[list(frame.traces).index(data.index([t for t in data if t.name == arm_label(arm)][0]))]
            assert len(path.x) == k + 1 and path.x[-1] == pytest.approx(tr.points[k, 0], rel=1e-6)
        now = [d for d in frame.data if d.text and "at step" in d.text[0]]
        assert len(now) == 3 and all(f"at step {k}" in d.text[0] for d in now)
    two = trajs["two-phase"]
    star = [i for i, t in enumerate(data) if t.name and t.name.startswith("switch to CG")][0]
    fills = [f.data[list(f.traces).index(star)].marker.color for f in fig.frames]
    assert fills[two.switch_index - 1] == "white" and fills[two.switch_index] != "white"  # filled once reached
    # long walks: at most WALK_FRAMES frames, the first, last and switch steps among them
    steps = teaching.figures.walk_steps(300, switches=[37])
    assert len(steps) <= teaching.figures.WALK_FRAMES and {0, 37, 38, 300} <= set(steps)
    assert steps == sorted(set(steps))
