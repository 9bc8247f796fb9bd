"""Chapter 09 (hierarchical contrastive motion learning): the views as plotly figures with static
controls, the result tables and a live explorer.

1. the clip player: one test clip per class (a dropdown), a frame slider, and a PCA → RGB image
   of each motion level at that frame;
2. true against linearly decoded displacement (arrows), one clip per class;
3. linear-probe accuracy by feature and stage, and the predictions × targets similarity matrix;
4. t-SNE of the pooled features per level;
5. accuracy against the labeled budget, accuracy per row, and the tables;
6. the live explorer that trains one motion row through the chapter's cache.
"""
from __future__ import annotations

import inspect

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

from labkit.cache import cached, cached_runs
from labkit.data.moving_shapes import MOTIONS
from labkit.experiments import contrastive_motion as ex
from labkit.experiments import contrastive_motion_runs as runs
from labkit.methods import contrastive_motion as cm
from labkit.viz import plots, tables, widgets
from labkit.viz.plots import PALETTE, compact, style, subplot_refs

ROW_COLOURS = {ex.APPEARANCE: "#9CA3AF", ex.RGB_DIFF: "#76B7B2", ex.CE_ONLY: "#5F7A9A", ex.SSL: "#F28E2B"}
STAGES = {"probe_init": ("random init", "#BAB0AC"), "probe_ssl": ("after Stage A", "#F28E2B"),
          "probe_final": ("after training", "#2C4F75")}
CHANCE = 1 / len(MOTIONS)
SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"


def _colour(row: str, index: int = 0) -> str:
    return ROW_COLOURS.get(row, PALETTE[(index + 4) % len(PALETTE)])


def _errors(stds) -> dict:
    """± std error bars (none drawn where the std is missing: one seed)."""
    return dict(type="data", array=compact(np.nan_to_num(stds), 4), thickness=1.5, width=4, color="#444444")


def _level_name(name: str) -> str:
    """``"m1"`` → ``"m¹"`` (``"z0"`` → ``"z⁰"``)."""
    return name[0] + "".join(SUPERSCRIPTS[int(d)] for d in name[1:])


def _motion_net(results: dict, row: str):
    """The row's trained network, or a message figure when it has none with a motion pathway."""
    found = ex.entries(results, row)
    if not found:
        return None, plots.plot_message(f"No {row} run at this budget.")
    if not found[0]["levels"]:
        return None, plots.plot_message(f"The {row} row has no motion pathway.")
    return ex.trained_net(results, row), None


def _class_examples(data) -> list[int]:
    """The first test clip of each class."""
    return [int((data.labels == c).nonzero()[0]) for c in range(len(MOTIONS))]


@torch.no_grad()
def _forward(net, data, index) -> dict:
    return runs._forward(net, data, torch.as_tensor(index).reshape(-1))


def _hide_axes(fig: go.Figure) -> None:
    for update in (fig.update_xaxes, fig.update_yaxes):
        update(showticklabels=False, showgrid=False, ticks="")


def _upsample(image: np.ndarray, size: int) -> np.ndarray:
    """``(h, w, 3)`` → about ``(size, size, 3)`` by pixel repetition (no smoothing of the cells)."""
    k = max(1, size // image.shape[0])
    return np.kron(image, np.ones((k, k, 1)))


# ---- 1. the clip player --------------------------------------------------------------------------------

def _pca_rgb(features: torch.Tensor) -> np.ndarray:
    """``(T, C, h, w)`` → ``(T, h, w, 3)`` in [0, 1]: the first three principal components of the
    clip's features over all frames and positions, each scaled over the whole clip (2nd to 98th
    percentile, so that the zero-padded first frame does not take the whole range) so that colours
    mean the same thing in every frame."""
    T, C, h, w = features.shape
    X = features.permute(0, 2, 3, 1).reshape(-1, C).double().numpy()
    X = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    Y = X @ vt[:3].T
    Y = np.pad(Y, ((0, 0), (0, 3 - Y.shape[1])))  # fewer than 3 channels: black components
    low, high = np.percentile(Y, 2, axis=0), np.percentile(Y, 98, axis=0)
    return np.clip((Y - low) / np.where(high > low, high - low, 1.0), 0, 1).reshape(T, h, w, 3)


def plot_clip_and_motion(results: dict, row: str = ex.SSL) -> go.Figure:
    """One test clip per class (a dropdown over classes) and a slider over its frames: the frame
    beside a PCA → RGB image of each motion level m^l at that frame (PCA fitted per level on that
    clip's features, all frames and positions). The slider restyles the images in place, so it
    keeps the class the dropdown chose. m^l at frame 0 sees zeros for the frame before it."""
    net, message = _motion_net(results, row)
    if net is None:
        return message
    data = ex.chapter_pools(results).test
    examples = _class_examples(data)
    out = _forward(net, data, examples)
    frames, display = data.clips.shape[1], 4 * data.clips.shape[-1]
    images = []  # per class: [frame images, m1 images, ...], each a list over frames
    for i in range(len(examples)):
        grey = np.repeat(data.clips[examples[i], :, 0, :, :, None].numpy(), 3, axis=-1)
        levels = [_pca_rgb(m[i]) for m in out["motion"]]
        images.append([[plots.png_source(_upsample(x[t], display)) for t in range(frames)] for x in [grey, *levels]])
    titles = ["frame"] + [f"{_level_name(f'm{l}')} (PCA → RGB)" for l in range(1, net.levels + 1)]
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.03)
    groups = {name: [go.Image(source=panel[0], hoverinfo="skip", **subplot_refs(fig, 1, col + 1))
                     for col, panel in enumerate(per_class)] for name, per_class in zip(MOTIONS, images)}
    fig = plots.figure_with_dropdown(groups, fig=fig, y=1.08)
    steps = [(str(t), [dict(source=panel[t]) for per_class in images for panel in per_class])
             for t in range(frames)]
    fig = plots.figure_with_frames(fig, steps, prefix="frame ")
    _hide_axes(fig)
    return style(fig, height=470, margin=dict(t=110, l=20, r=20, b=10),
                 title=f"One test clip per class and its motion features ({row})")


# ---- 2. displacement, true and decoded -------------------------------------------------------------

def _motion_and_flow(net, data, level: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Level-``level`` features ``(n, T-2, h, w, C)`` and the true displacement pooled to their grid
    ``(n, T-2, h, w, 2)``, paired as ``runs.displacement_r2`` pairs them."""
    m = torch.cat([o["motion"][level - 1] for o in runs._outputs(net, data)])
    flow = F.adaptive_avg_pool2d(data.displacement.flatten(0, 1), m.shape[-2:])
    flow = flow.reshape(*data.displacement.shape[:2], 2, *m.shape[-2:])
    # m at t has seen steps t-1 and t: it can know the displacement t-1 -> t
    return m[:, 1:-1].permute(0, 1, 3, 4, 2).numpy(), flow[:, :-2].permute(0, 1, 3, 4, 2).numpy()


def _arrows(x: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray, min_length: float = 0.5) -> tuple[list, list]:
    """Line segments with two-stroke heads from (x, y) to (x + u, y + v), ``None``-separated;
    arrows shorter than ``min_length`` are left out."""
    xs, ys = [], []
    for x0, y0, dx, dy in zip(x, y, u, v):
        length = float(np.hypot(dx, dy))
        if length < min_length:
            continue
        x1, y1 = x0 + dx, y0 + dy
        head, angle = 0.35 * length, np.arctan2(dy, dx)
        left = (x1 - head * np.cos(angle - 0.45), y1 - head * np.sin(angle - 0.45))
        right = (x1 - head * np.cos(angle + 0.45), y1 - head * np.sin(angle + 0.45))
        xs += [x0, x1, None, left[0], x1, right[0], None]
        ys += [y0, y1, None, left[1], y1, right[1], None]
    return xs, ys


def plot_displacement(results: dict, row: str = ex.SSL) -> go.Figure:
    """True displacement (pooled to the m¹ grid) against the displacement decoded from m¹ by a ridge
    map fitted on the labeled clips (as ``runs.displacement_r2``, here with the trained network), for
    one test clip per class (a dropdown) at a middle frame; the title gives the test R². Arrows share
    one scale; those under 0.15 pixel are left out (the decoder's noise on the background)."""
    from sklearn.linear_model import Ridge

    net, message = _motion_net(results, row)
    if net is None:
        return message
    pools = ex.chapter_pools(results)
    X_train, y_train = _motion_and_flow(net, pools.labeled)
    X_test, y_test = _motion_and_flow(net, pools.test)
    ridge = Ridge(alpha=1.0).fit(X_train.reshape(-1, X_train.shape[-1]), y_train.reshape(-1, 2))
    r2 = float(ridge.score(X_test.reshape(-1, X_test.shape[-1]), y_test.reshape(-1, 2)))
    step = (X_test.shape[1] - 1) // 2  # index into steps 1…T-2: the displacement frame step → step+1
    size, (h, w) = pools.test.clips.shape[-1], X_test.shape[2:4]
    k = max(1, 256 // size)  # display pixels per clip pixel
    centres = np.meshgrid((np.arange(w) + 0.5) * size / w * k - 0.5, (np.arange(h) + 0.5) * size / h * k - 0.5)
    examples = _class_examples(pools.test)
    true = y_test[examples, step]
    decoded = ridge.predict(X_test[examples, step].reshape(-1, X_test.shape[-1])).reshape(true.shape)
    scale = 1.2 * size / w * k / max(float(np.percentile(np.hypot(*true.reshape(-1, 2).T), 99)), 1e-6)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=(f"true displacement (pooled to the {h}×{w} grid)",
                                        "decoded linearly from m¹"))
    groups = {}
    for i, name in enumerate(MOTIONS):
        frame = np.repeat(pools.test.clips[examples[i], step, 0, :, :, None].numpy(), 3, axis=-1)
        source = plots.png_source(0.25 + 0.5 * _upsample(frame, size * k))  # dimmed, so the arrows stand out
        traces = []
        for col, (field, colour) in enumerate(((true[i], "#222222"), (decoded[i], "#E15759")), start=1):
            xs, ys = _arrows(centres[0].ravel(), centres[1].ravel(), *(scale * field.reshape(-1, 2).T),
                             min_length=0.15 * scale)
            traces += [go.Image(source=source, hoverinfo="skip", **subplot_refs(fig, 1, col)),
                       go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=2), hoverinfo="skip",
                                  showlegend=False, **subplot_refs(fig, 1, col))]
        groups[name] = traces
    fig = plots.figure_with_dropdown(groups, fig=fig, y=1.08)
    _hide_axes(fig)
    return style(fig, height=480, margin=dict(t=120, l=20, r=20, b=20),
                 title=f"Displacement, frame {step} → {step + 1} ({row}); test R² of m¹ → displacement {r2:.2f}")


# ---- 3. probes and the similarity matrix --------------------------------------------------------------

def plot_probe_bars(results: dict) -> go.Figure:
    """Linear-probe test accuracy of each feature (z⁰, m¹, m²) at random init, after Stage A and
    after training, mean ± std over seeds; a dropdown over the rows with a motion pathway."""
    table = ex.probe_table(results)
    rows = list(dict.fromkeys(t["row"] for t in table))
    if not rows:
        return plots.plot_message("No motion row at this budget.")
    groups = {}
    for row in rows:
        found = [t for t in table if t["row"] == row]
        features = [_level_name(t["feature"]) for t in found]
        groups[row] = [go.Bar(x=features, y=compact([t[f"{stage}_mean"] for t in found], 4), name=label,
                              marker=dict(color=colour, line=dict(width=0)), legendgroup=stage,
                              error_y=_errors([t[f"{stage}_std"] for t in found]),
                              texttemplate="%{y:.2f}", textposition="inside",
                              hovertemplate=f"{label}<br>%{{x}}: %{{y:.3f}}<extra>{row}</extra>")
                       for stage, (label, colour) in STAGES.items()]
    fig = plots.figure_with_dropdown(groups, y=1.02)
    fig.add_hline(y=CHANCE, line=dict(color="#333333", dash="dash", width=1.5),
                  annotation_text="chance 1/8", annotation_position="top right")
    fig.update_layout(barmode="group", bargap=0.25, legend=dict(orientation="h", y=-0.15))
    fig.update_xaxes(title_text="feature (time- and space-pooled)", showgrid=False, ticks="")
    fig.update_yaxes(title_text="linear-probe test accuracy", range=[0, 1])
    return style(fig, height=460, margin=dict(t=100), title="Linear probes on frozen features (mean ± std over seeds)")


SIMILARITY_CLIPS, SIMILARITY_ANCHORS = 32, 48


@torch.no_grad()
def _similarities(net, data, seed: int) -> dict[int, dict]:
    """Per level: cosine of the predictions and targets of ``SIMILARITY_ANCHORS`` anchors sampled from
    one batch of test clips (as ``prediction_loss`` samples them), sorted by clip, step, position."""
    rng = torch.Generator().manual_seed(seed + 30)
    index = torch.randperm(len(data.labels), generator=rng)[:SIMILARITY_CLIPS]
    out = _forward(net, data, index)
    result = {}
    for level in range(1, net.levels + 1):
        prediction, target = net.predictions(out, level)
        b, steps, dim, h, w = prediction.shape
        anchors = cm.sample_anchors(b, steps, h * w, SIMILARITY_ANCHORS, first_step=min(level - 1, steps - 1),
                                    generator=rng)
        anchors = anchors[((anchors[:, 0] * steps + anchors[:, 1]) * h * w + anchors[:, 2]).argsort()]

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 1, 3, 4, 2).reshape(b, steps, h * w, dim)[anchors[:, 0], anchors[:, 1], anchors[:, 2]]

        similarity = (flat(prediction) @ flat(target).T).numpy()
        result[level] = dict(similarity=similarity, clips=len(index),
                             top1=float((similarity.argmax(axis=1) == np.arange(len(similarity))).mean()))
    return result


def plot_similarity_matrix(results: dict, row: str = ex.SSL) -> go.Figure:
    """Cosine similarity of predictions (rows) and future targets (columns) of anchors sampled from
    one batch of test clips, sorted by clip (a block per clip); the diagonal is each prediction's
    positive, a cross marks its best-scoring target (green: the positive). A dropdown over levels."""
    net, message = _motion_net(results, row)
    if net is None:
        return message
    levels = _similarities(net, ex.chapter_pools(results).test, results["config"]["seed"])
    groups, updates = {}, []
    for level, found in levels.items():
        sim = found["similarity"]
        n = len(sim)
        best = sim.argmax(axis=1)
        groups[f"level {level}"] = [
            go.Heatmap(z=compact(sim, 3), zmin=-1, zmax=1, colorscale="RdBu_r",
                       colorbar=dict(title=dict(text="cosine", side="right"), thickness=14),
                       hovertemplate="prediction %{y} · target %{x}: %{z:.2f}<extra></extra>"),
            go.Scatter(x=compact(best), y=np.arange(n), mode="markers", name="best-scoring target",
                       marker=dict(symbol="x-thin", size=7, line=dict(width=2),
                                   color=["#2CA02C" if b == i else "#222222" for i, b in enumerate(best)]),
                       hovertemplate="prediction %{y}: best target %{x}<extra></extra>")]
        updates.append(dict(title=dict(text=f"Level {level} ({row}), {n} anchors of {found['clips']} test clips: "
                                            f"top-1 {found['top1']:.2f} (chance {1 / n:.3f})"),
                            **{"xaxis.range": [-0.5, n - 0.5], "yaxis.range": [n - 0.5, -0.5]}))
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.02)
    fig.update_xaxes(title_text="target anchor j", showgrid=False, constrain="domain")
    fig.update_yaxes(title_text="prediction anchor i", showgrid=False, scaleanchor="x", constrain="domain")
    return style(fig, height=560, margin=dict(t=100), showlegend=True, legend=dict(orientation="h", y=-0.12))


# ---- 4. t-SNE ---------------------------------------------------------------------------------------------

def _tsne_points(results: dict, row: str) -> dict:
    from sklearn.manifold import TSNE

    data = ex.chapter_pools(results).test
    features = runs.pooled_features(ex.trained_net(results, row), data)
    perplexity = min(30.0, (len(data.labels) - 1) / 3)
    out = {"labels": data.labels.numpy()}
    for name, X in features.items():
        X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)  # standardised, as the probes see them
        out[name] = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=0).fit_transform(X)
    return out


def plot_tsne(results: dict, row: str = ex.SSL) -> go.Figure:
    """t-SNE of the time- and space-pooled features of every test clip, coloured by class (the
    out-and-back pair as diamonds); a dropdown over z⁰ and each motion level."""
    net, message = _motion_net(results, row)
    if net is None:
        return message
    config = {k: v for k, v in results["config"].items() if k != "workers"}  # what decides the network
    points = cached("motion-tsne", dict(config, row=row), lambda: _tsne_points(results, row))
    labels = points["labels"]
    probes = {t["feature"]: t["probe_final_mean"] for t in ex.probe_table(results) if t["row"] == row}
    groups, updates = {}, []
    for name in [k for k in points if k != "labels"]:
        xy = points[name]
        groups[_level_name(name)] = [
            go.Scatter(x=compact(xy[labels == c, 0]), y=compact(xy[labels == c, 1]), mode="markers", name=motion,
                       marker=dict(color=PALETTE[c], size=7, symbol="diamond" if c >= 6 else "circle",
                                   line=dict(color="white", width=0.5)),
                       hovertemplate=f"{motion}<extra></extra>")
            for c, motion in enumerate(MOTIONS)]
        probe = probes.get(name, float("nan"))
        updates.append(dict(title=dict(text=f"t-SNE of pooled {_level_name(name)} of the test clips ({row}); "
                                            f"linear probe {probe:.2f}")))
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.02)
    _hide_axes(fig)
    return style(fig, height=520, margin=dict(t=100))


# ---- 5. accuracy: budgets, rows, tables ------------------------------------------------------------------

def plot_budget(results: dict) -> go.Figure:
    """Test accuracy against labeled clips per class (log x) for the motion network with CE only and
    with SSL first (mean ± std over seeds), appearance only at the main budget, and chance."""
    table = ex.budget_table(results)
    fig = go.Figure()
    for row, symbol in ((ex.CE_ONLY, "circle"), (ex.SSL, "square"), (ex.APPEARANCE, "diamond")):
        found = [t for t in table if t["row"] == row]
        if found:
            fig.add_trace(plots.errorbar_trace([t["labeled_per_class"] for t in found],
                                               [t["accuracy_mean"] for t in found], [t["accuracy_std"] for t in found],
                                               name=row, colour=_colour(row), symbol=symbol))
    budgets = sorted({t["labeled_per_class"] for t in table})
    if not budgets:
        return plots.plot_message("No runs at this budget.")
    fig.add_hline(y=CHANCE, line=dict(color="#333333", dash="dash", width=1.5), annotation_text="chance 1/8",
                  annotation_position="bottom right")
    fig.update_xaxes(title_text="labeled clips per class", type="log", tickvals=budgets)
    fig.update_yaxes(title_text="test accuracy", range=[0, 1])
    return style(fig, height=420, title="Accuracy against the label budget (mean ± std over seeds)")


def _vertical_line(x: float, dash: str) -> dict:
    return dict(type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="paper",
                line=dict(color="#333333", dash=dash, width=1.5))


def plot_accuracy_bars(results: dict) -> go.Figure:
    """Test accuracy of every row, mean ± std over seeds; a dropdown picks all test clips or only the
    out-and-back pair (telling its two classes apart needs the order of the frames)."""
    table = ex.accuracy_table(results)
    if not table:
        return plots.plot_message("No runs at this budget.")
    groups, updates = {}, []
    for label, key in (("overall", "overall"), ("out-and-back pair", "out_and_back")):
        groups[label] = [go.Bar(y=[t["row"] for t in table], x=compact([t[f"{key}_mean"] for t in table], 4),
                                orientation="h", showlegend=False,
                                error_x=_errors([t[f"{key}_std"] for t in table]),
                                marker=dict(color=[_colour(t["row"], i) for i, t in enumerate(table)]),
                                texttemplate="%{x:.3f}", textposition="inside", insidetextanchor="start",
                                customdata=[t["seeds"] for t in table],
                                hovertemplate=f"%{{y}}<br>{label} %{{x:.3f}} (%{{customdata}} seed(s))<extra></extra>")]
        shapes, note = [_vertical_line(CHANCE, "dash")], "dashed: chance 1/8"
        if key == "out_and_back":  # a network that finds the pair but cannot tell the turn
            shapes.append(_vertical_line(0.5, "dot"))
            note += "; dotted: the pair found, the turn guessed"
        updates.append({"xaxis.title.text": f"test accuracy, {label} ({note})", "shapes": shapes})
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.02)
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(autorange="reversed", ticks="")
    return style(fig, height=140 + 40 * len(table), margin=dict(l=230, t=90), title="Test accuracy per row")


def _cell(mean: float, std: float, digits: int = 3) -> str | None:
    return None if not np.isfinite(mean) else tables.mean_std(mean, std, digits)


def accuracy_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(row=t["row"], seeds=t["seeds"], **{key: _cell(t[f"{key}_mean"], t[f"{key}_std"])
                                                    for key in ("overall", "out_and_back")})
            for t in ex.accuracy_table(results)]
    return tables.result_table(rows, {"row": "row", "seeds": "seeds", "overall": "test accuracy",
                                      "out_and_back": "out-and-back pair accuracy"},
                               title="Test accuracy (mean ± std over seeds)",
                               note=f"Chance is 1/{len(MOTIONS)}; on the out-and-back pair a network that finds "
                                    "the pair but not the turn scores 1/2.")


def probe_result_table(results: dict) -> tables.ResultTable:
    keys = ("probe_init", "probe_ssl", "probe_final", "top1", "r2")
    rows = [dict(row=t["row"], feature=_level_name(t["feature"]), seeds=t["seeds"],
                 **{key: _cell(t.get(f"{key}_mean", float("nan")), t.get(f"{key}_std", float("nan"))) for key in keys})
            for t in ex.probe_table(results)]
    return tables.result_table(rows, {"row": "row", "feature": "feature", "seeds": "seeds",
                                      "probe_init": "probe at random init", "probe_ssl": "probe after Stage A",
                                      "probe_final": "probe after training", "top1": "contrastive top-1",
                                      "r2": "displacement R²"},
                               title="Per-level measurements (mean ± std over seeds)",
                               note="Probes: logistic regression on time- and space-pooled frozen features. Top-1 "
                                    "(after Stage A) and R² (before Stage B) are per motion level.")


def cost_result_table(results: dict) -> tables.ResultTable:
    cost = ex.cost_table(results)
    rows = [dict(pathway=name, params=c["params"], macs=c["macs"]) for name, c in cost.items()]
    if cost.get("appearance", {}).get("params") and "motion" in cost:
        a, m = cost["appearance"], cost["motion"]
        rows.append(dict(pathway="motion / appearance", params=f"{m['params'] / a['params']:.2f}×",
                         macs=f"{m['macs'] / max(a['macs'], 1):.2f}×"))
    cfg = results["config"]
    return tables.result_table(rows, {"pathway": "pathway", "params": "parameters", "macs": "MACs per clip"},
                               title="Cost of the motion network's two pathways",
                               note=f"One clip of {cfg['frames']} frames of {cfg['size']}×{cfg['size']} pixels; "
                                    "the motion pathway is the encoders and the fusion convolutions.")


# ---- 6. the live explorer -----------------------------------------------------------------------------------

ON_OFF = (("on", True), ("off", False))
_DEFAULTS = {name: p.default for name, p in inspect.signature(ex.train_row).parameters.items()}


def _summary(entry: dict) -> str:
    stages = [stage for stage in STAGES if stage in entry]
    probes = ", ".join(f"{_level_name(k)} " + " → ".join(f"{entry[s][k]:.2f}" for s in stages)
                       for k in entry["probe_final"])
    text = (f"test accuracy {entry['test']['overall']:.3f} (out-and-back pair {entry['test']['out_and_back']:.3f}); "
            f"probes ({' → '.join(STAGES[s][0] for s in stages)}) {probes}")
    return text + ("; top-1 " + ", ".join(f"{k} {v:.2f}" for k, v in entry["top1"].items()) if "top1" in entry else "")


def _explorer_view(results: dict, levels: int, loss: str, stop_gradient: bool, labeled_per_class: int,
                   ssl: bool) -> widgets.Message:
    cfg = ex.MotionConfig(**results["config"])
    overrides = dict(kind="motion", levels=levels)
    if ssl:  # the loss settings only act in Stage A
        overrides.update(ssl=True, loss=loss, stop_gradient=stop_gradient)
    # settings at train_row's defaults are left out, so the chapter's own rows come from the cache
    overrides = {k: v for k, v in overrides.items() if k == "kind" or v != _DEFAULTS[k]}
    kwargs = ex._row_kwargs(cfg, overrides, cfg.seed, labeled_per_class)
    run = cached_runs("motion-run", ex.train_row, [kwargs], workers=1)[0]
    lines = [f"this run ({labeled_per_class} labeled per class): {_summary(run)}"]
    for row in (ex.CE_ONLY, ex.SSL):
        budget = labeled_per_class if ex.entries(results, row, labeled_per_class) else cfg.labeled_per_class
        found = ex.entries(results, row, budget)
        if found:
            lines.append(f"{row} (the chapter, seed {found[0]['seed']}, {budget} labeled per class): "
                         f"{_summary(found[0])}")
    return widgets.Message("\n".join(lines))


def train_explorer(results: dict) -> widgets.Explorer:
    """Live in JupyterLab: motion levels, the Stage A loss, stop-gradient, the label budget and SSL
    on or off → train one motion row (the chapter's seed and cache) and compare it with the
    chapter's CE-only and SSL rows."""
    cfg = results["config"]
    budgets = sorted({5, 10, 20, 40, cfg["labeled_per_class"], *cfg["label_budgets"]})
    controls = {"levels": widgets.dropdown("motion levels", range(1, len(cfg["widths"])), _DEFAULTS["levels"]),
                "loss": widgets.dropdown("Stage A loss", cm.LOSSES, "nce"),
                "stop_gradient": widgets.dropdown("stop-gradient on targets", ON_OFF, True),
                "labeled_per_class": widgets.selection_slider("labeled per class", budgets, cfg["labeled_per_class"]),
                "ssl": widgets.dropdown("Stage A (SSL)", ON_OFF, True)}
    return widgets.explorer(controls, lambda **values: _explorer_view(results, **values), button="Train",
                            title="Train one motion row", render_now=False)
