"""Chapter 06 (SLADE): the paper's views as plotly figures with static controls, plus a live explorer.

1. the similarity histograms of same / different pseudo-label pairs with their Gaussians and the
   thresholds T1, T2, over training (a step slider), and the statistics' trace;
2. mined-pair precision against the threshold offset δ, with the pairs kept (a δ slider);
3. Recall@K bars for every row with seed error bars (a dropdown over K and NMI), and tables;
4. t-SNE of test embeddings, teacher beside student;
5. the retrieval gallery (a query slider; green / red frames);
6. the live explorer that retrains the quick student from the chapter's teacher.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.cache import artifact, cached, cached_runs
from labkit.experiments import slade as experiment
from labkit.experiments import slade_runs as runs
from labkit.experiments import slade_student as student
from labkit.metrics import nearest_neighbours
from labkit.viz import plots, tables, widgets
from labkit.viz.plots import PALETTE, compact, style, subplot_refs

ROW_COLOURS = {experiment.TEACHER: "#9CA3AF", experiment.CONTROL: "#5F7A9A", experiment.CONTROL_EARLY: "#2C4F75",
               experiment.ALL_PAIRS: "#B07AA1", experiment.SLADE: "#F28E2B", experiment.COSINE: "#59A14F",
               experiment.SSL_ONLY: "#BAB0AC", experiment.SSL_TEACHER: "#76B7B2", experiment.SELECT_SIM: "#EDC948",
               experiment.ROUND_2: "#B8560F", experiment.CONTROL_2: "#1F3A5F"}
SAME, DIFFERENT = "#F28E2B", "#4E79A7"


def _colour(row: str, index: int = 0) -> str:
    return ROW_COLOURS.get(row, PALETTE[index % len(PALETTE)])


# ---- 0. the pools ---------------------------------------------------------------------------------------

def plot_pools(cfg: experiment.SladeConfig, per_pool: int = 8) -> go.Figure:
    """``per_pool`` images of each pool, one strip per pool; the unlabeled strip shows its hidden
    class (a labeled class or a novel one) only in the hover text, as the model never sees it."""
    data = runs.make_pools(**experiment.pools(cfg))
    first_novel = int(data.y_labeled.max()) + 1
    pools = {"labeled (30 classes)": (data.X_labeled, data.y_labeled),
             "unlabeled (hidden classes)": (data.X_unlabeled, data.y_unlabeled_hidden),
             "validation (20 classes)": (data.X_validation, data.y_validation),
             "test (40 classes)": (data.X_test, data.y_test)}
    fig = make_subplots(rows=len(pools), cols=1, subplot_titles=list(pools), vertical_spacing=0.07)
    for r, (name, (X, y)) in enumerate(pools.items(), start=1):
        pick = torch.linspace(0, len(X) - 1, per_pool).round().long()
        pixels = (X[pick, 0] * 255).round().to(torch.uint8).numpy()
        strip = _framed(pixels, [None] * per_pool, pad=1)
        kinds = [f"class {int(c)}" + (" (novel)" if name.startswith("unlabeled") and c >= first_novel else "")
                 for c in y[pick]]
        fig.add_trace(go.Image(source=plots.png_source(strip), hoverinfo="skip", **subplot_refs(fig, r, 1)))
        cell = strip.shape[2] / per_pool
        fig.add_trace(go.Scatter(x=[(i + 0.5) * cell for i in range(per_pool)], y=[strip.shape[1] / 2] * per_pool,
                                 mode="markers", marker=dict(opacity=0), text=kinds, showlegend=False,
                                 hovertemplate="%{text}<extra></extra>", **subplot_refs(fig, r, 1)))
    fig.update_xaxes(showticklabels=False, showgrid=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, ticks="")
    return style(fig, height=520, margin=dict(t=70, l=20, r=20, b=20),
                 title=f"The four disjoint pools ({cfg.novel_fraction:.0%} of the unlabeled images from novel classes)")


# ---- 1. similarity distributions ------------------------------------------------------------------

def _gaussian(mu: float, var: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-1, 1, 201)
    sd = math.sqrt(max(var, 1e-8))
    return x, scale * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def plot_similarity_histograms(results: dict, row: str = experiment.SLADE) -> go.Figure:
    """Basis similarity (cosine for the cosine row) of same- and different-pseudo-label pairs of 300
    unlabeled images, as densities, with the Gaussian of each group's mean and variance and the
    thresholds T1 = μ⁺ + δ, T2 = μ⁻ − δ of the momentum statistics; a slider over training steps."""
    entry = experiment.first_seed(results, row)
    if entry is None:
        return plots.plot_message(f"No {row} run at this budget.")
    centres = (student.HISTOGRAM_BINS[:-1] + student.HISTOGRAM_BINS[1:]) / 2
    width = float(np.diff(student.HISTOGRAM_BINS)[0])

    def density(counts) -> np.ndarray:
        counts = np.asarray(counts, float)
        return counts / max(counts.sum(), 1) / width

    top = 1.05 * max(float(density(snap[name]).max()) for snap in entry["snapshots"] for name in ("same", "different"))
    steps, titles = [], []
    for snap in entry["snapshots"]:
        traces = []
        for name, colour, label in (("same", SAME, "same pseudo label"), ("different", DIFFERENT, "different")):
            traces.append(go.Bar(x=compact(centres), y=compact(density(snap[name])), width=width, name=label,
                                 opacity=0.55, marker=dict(color=colour, line=dict(width=0)), legendgroup=name,
                                 hovertemplate=f"{label}<br>s=%{{x:.2f}}: %{{y:.2f}}<extra></extra>"))
            if np.isfinite(snap[f"mu_{name}"]):
                x, y = _gaussian(snap[f"mu_{name}"], snap[f"var_{name}"], 1.0)
                traces.append(go.Scatter(x=compact(x), y=compact(y), mode="lines", line=dict(color=colour, width=2),
                                         name=f"Gaussian ({label})", legendgroup=name, showlegend=False,
                                         hoverinfo="skip"))
        if snap["thresholds"] is not None:
            for value, label, dash in zip(snap["thresholds"], ("T1 = μ⁺ + δ", "T2 = μ⁻ − δ"), ("dash", "dot")):
                traces.append(go.Scatter(x=[value, value], y=[0, top], mode="lines", name=label,
                                         line=dict(color="#222222", width=1.5, dash=dash),
                                         hovertemplate=f"{label} = {value:.3f}<extra></extra>"))
        state = "warm-up (the basis alone, no mining)" if snap["step"] < entry["warmup"] else (
            "mining" if snap["thresholds"] is not None else "no mining yet: μ⁺ ≤ μ⁻")
        steps.append((str(snap["step"]), traces))
        titles.append(dict(title=dict(text=f"Pair similarities of the {row} student (seed {entry['seed']}), "
                                           f"step {snap['step']}: {state}")))
    fig = go.Figure(layout=dict(barmode="overlay"))
    fig = plots.figure_with_slider(steps, fig=fig, active=len(steps) - 1, prefix="student step ",
                                   layout_updates=titles)
    fig.update_xaxes(title_text="similarity s_ij", range=[-1, 1])
    fig.update_yaxes(title_text="density", range=[0, top])
    return style(fig, height=480)


def plot_statistics_trace(results: dict) -> go.Figure:
    """The momentum statistics of Eq. 6 over training: μ± with ± σ bands, for the SLADE and cosine
    students (seed 0); the vertical line is the end of the warm-up."""
    fig = go.Figure()
    for row in (experiment.SLADE, experiment.COSINE):
        entry = experiment.first_seed(results, row)
        if entry is None or not entry["trace"]["step"]:
            continue
        trace = entry["trace"]
        for sign, label, dash in (("pos", "μ⁺", None), ("neg", "μ⁻", "dot")):
            fig.add_traces(plots.band_traces(trace["step"], trace[f"mu_{sign}"], np.sqrt(trace[f"var_{sign}"]),
                                             name=f"{label} · {row}", colour=_colour(row), dash=dash))
        warmup = entry["warmup"]
    if not fig.data:
        return plots.plot_message("No student trace at this budget.")
    fig.add_vline(x=warmup, line=dict(color="#666666", dash="dash", width=1), annotation_text="mining starts")
    fig.update_xaxes(title_text="student step")
    fig.update_yaxes(title_text="similarity")
    return style(fig, height=420, title="Momentum statistics μ± (band: ± σ) during student training")


# ---- 2. precision against δ -------------------------------------------------------------------------

def plot_delta_precision(results: dict) -> go.Figure:
    """Precision of the positive pairs Eq. 7 keeps on the whole unlabeled pool at the end of
    training, against δ, with the number kept (right), for basis and cosine selection and both
    rules; the dashed line is every same-pseudo-label pair. The slider marks one δ."""
    curves = {row: experiment.first_seed(results, row) for row in (experiment.SLADE, experiment.COSINE)}
    curves = {row: e["delta_curve"] for row, e in curves.items() if e is not None and e["delta_curve"] is not None}
    if not curves:
        return plots.plot_message("No selection curve at this budget (mining never started).")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("precision of kept positive pairs", "positive pairs kept (log)"))
    left, right = subplot_refs(fig, 1, 1), subplot_refs(fig, 1, 2)
    deltas = next(iter(curves.values()))["delta"]
    for index, (row, curve) in enumerate(curves.items()):
        for select, dash in (("sim+label", None), ("sim", "dot")):
            name = f"{row} · {select}"
            fig.add_trace(go.Scatter(x=deltas, y=compact(curve[select]["pos_precision"], 4), mode="lines+markers",
                                     name=name, legendgroup=name, line=dict(color=_colour(row), dash=dash),
                                     hovertemplate=f"{name}<br>δ=%{{x}}: precision %{{y:.3f}}<extra></extra>", **left))
            kept = [count or None for count in curve[select]["pos_count"]]  # none kept: a gap on the log axis
            fig.add_trace(go.Scatter(x=deltas, y=kept, mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=False, line=dict(color=_colour(row), dash=dash),
                                     hovertemplate=f"{name}<br>δ=%{{x}}: %{{y:,}} pairs<extra></extra>", **right))
    all_pairs = curves.get(experiment.SLADE, next(iter(curves.values())))["all_pairs"]
    fig.add_trace(plots.bound_trace([deltas[0], deltas[-1]], [all_pairs["pos_precision"]] * 2,
                                    name="all same-pseudo-label pairs", refs=left))
    reference = curves.get(experiment.SLADE, next(iter(curves.values())))
    steps = []
    for i, delta in enumerate(deltas):
        kept = reference["sim+label"]["pos_count"][i]
        precision = reference["sim+label"]["pos_precision"][i]
        text = "nothing kept" if not kept else f"{kept:,} kept, precision {precision:.3f}"
        steps.append((f"{delta:+.2f}", [go.Scatter(x=[delta, delta], y=[0, 1], mode="lines", showlegend=False,
                                                   line=dict(color="#222222", width=1, dash="dash"),
                                                   hovertemplate=f"δ = {delta:+.2f}: {text}<extra></extra>", **left)],
                      dict(title=dict(text=f"Mined positives at δ = {delta:+.2f}: {text} (SLADE, sim+label)"))))
    fig = plots.figure_with_slider([(label, traces) for label, traces, _ in steps], fig=fig,
                                   active=deltas.index(0.0) if 0.0 in deltas else 0, prefix="δ = ",
                                   layout_updates=[update for *_, update in steps])
    fig.update_xaxes(title_text="threshold offset δ")
    fig.update_yaxes(range=[0, 1.02], **{"row": 1, "col": 1})
    fig.update_yaxes(type="log", **{"row": 1, "col": 2})
    return style(fig, height=480)


# ---- 3. Recall@K bars and tables ---------------------------------------------------------------------

_METRICS = {"R@1": "r1", "R@2": "r2", "R@4": "r4", "R@8": "r8", "NMI": "nmi"}


def plot_recall_bars(results: dict) -> go.Figure:
    """Test Recall@K (or NMI) of every row, mean ± std over seeds; a dropdown picks the metric."""
    table = experiment.recall_table(results)
    groups, updates = {}, []
    for label, key in _METRICS.items():
        values = [t[f"{key}_mean"] for t in table]
        groups[label] = [go.Bar(y=[t["row"] for t in table], x=compact(values, 4), orientation="h",
                                error_x=dict(type="data", array=compact(np.nan_to_num([t[f"{key}_std"] for t in table]), 4),
                                             thickness=1.5, width=4, color="#444444"),
                                marker=dict(color=[_colour(t["row"], i) for i, t in enumerate(table)]),
                                texttemplate="%{x:.3f}", textposition="inside", insidetextanchor="start",
                                customdata=[t["seeds"] for t in table], showlegend=False,
                                hovertemplate=f"%{{y}}<br>{label} %{{x:.3f}} (%{{customdata}} seed(s))<extra></extra>")]
        finite = [v for v in values if np.isfinite(v)]
        low = max(0.0, min(finite) - 0.05) if finite else 0.0
        updates.append({"xaxis.range": [low, 1.0], "xaxis.title.text": f"test {label} (mean ± std over seeds)"})
    fig = plots.figure_with_dropdown(groups, layout_updates=updates, y=1.02)
    fig.update_yaxes(autorange="reversed", ticks="")
    return style(fig, height=110 + 34 * len(table), margin=dict(l=330, t=90),
                 title="Retrieval on the 40 unseen test classes")


def _cell(mean: float, std: float, digits: int = 3) -> str | None:
    return None if not np.isfinite(mean) else tables.mean_std(mean, std, digits)


def recall_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(row=t["row"], seeds=t["seeds"], **{key: _cell(t[f"{key}_mean"], t[f"{key}_std"])
                                                    for key in ("r1", "r2", "r4", "r8", "nmi", "val_r1")})
            for t in experiment.recall_table(results)]
    return tables.result_table(rows, {"row": "row", "seeds": "seeds", "r1": "R@1", "r2": "R@2", "r4": "R@4",
                                      "r8": "R@8", "nmi": "NMI", "val_r1": "validation R@1"},
                               title="Test retrieval (mean ± std over seeds)",
                               note="Each test image is a query against the other test images, itself excluded; "
                                    "NMI is k-means with the number of test classes.")


def pair_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(row=t["row"], seeds=t["seeds"], kept=round(t["pos_selected"]),
                 **{key: _cell(t[f"{key}_mean"], t[f"{key}_std"], 4 if key.startswith("auc") else 3)
                    for key in ("pos_precision", "pos_recall", "neg_precision", "pseudo_nmi", "pseudo_purity",
                                "auc_basis", "auc_cosine")})
            for t in experiment.pair_table(results)]
    return tables.result_table(rows, {"row": "row", "seeds": "seeds", "kept": "positives mined (per run)",
                                      "pos_precision": "positive precision", "pos_recall": "positive recall",
                                      "neg_precision": "negative precision", "pseudo_nmi": "pseudo-label NMI",
                                      "pseudo_purity": "purity", "auc_basis": "AUC basis",
                                      "auc_cosine": "AUC cosine"},
                               title="Mined unlabeled pairs against the hidden labels (mean ± std over seeds)",
                               note="Precision and recall count every pair the ranking loss saw after the warm-up; "
                                    "the AUCs score all pairs of the unlabeled pool with the trained student.")


def sweep_result_table(results: dict) -> tables.ResultTable:
    rows = [dict(row, chosen="✓" if row["chosen"] else "") for row in experiment.sweep_table(results)]
    return tables.result_table(rows, {"knob": "knob", "value": "value", "validation_r1": "validation R@1",
                                      "test_r1": "test R@1", "chosen": "chosen"},
                               title="The validation sweep (seed 0; one knob at a time)",
                               note="Chosen by validation R@1 only; test R@1 is shown, never used.")


# ---- 4. t-SNE -------------------------------------------------------------------------------------------

TSNE_CLASSES = 20


def _net(results: dict, state: dict) -> torch.nn.Module:
    model = runs.embedding_net(widths=tuple(results["config"]["widths"]))
    model.load_state_dict(state)
    return model


def _test_set(results: dict) -> runs.SladePools:
    return runs.make_pools(**experiment.pools(experiment.config_of(results)))


def _tsne_points(results: dict) -> dict:
    from sklearn.manifold import TSNE

    data = _test_set(results)
    keep = data.y_test < data.y_test.min() + TSNE_CLASSES
    out = {"labels": data.y_test[keep].numpy()}
    for row in (experiment.TEACHER, experiment.SLADE):
        E = runs.embed(_net(results, experiment.first_seed(results, row)["state"]), data.X_test[keep]).numpy()
        out[row] = TSNE(n_components=2, init="pca", perplexity=30, random_state=0).fit_transform(E)
    return out


def plot_tsne(results: dict) -> go.Figure:
    """t-SNE of the test embeddings of 20 test classes: the teacher beside the SLADE student (seed 0),
    one colour per class."""
    config = {k: v for k, v in results["config"].items() if k != "workers"}  # what decides the two nets
    points = cached("slade-tsne", dict(config, chosen=results["chosen"]), lambda: _tsne_points(results))
    labels = points["labels"] - points["labels"].min()
    fig = make_subplots(rows=1, cols=2, subplot_titles=(experiment.TEACHER, experiment.SLADE),
                        horizontal_spacing=0.04)
    for col, row in enumerate((experiment.TEACHER, experiment.SLADE), start=1):
        xy = points[row]
        fig.add_trace(go.Scatter(x=compact(xy[:, 0]), y=compact(xy[:, 1]), mode="markers", showlegend=False,
                                 marker=dict(color=[PALETTE[c % 10] for c in labels], size=6,
                                             symbol=[("circle", "diamond")[c // 10 % 2] for c in labels]),
                                 customdata=labels, hovertemplate="test class %{customdata}<extra></extra>",
                                 **subplot_refs(fig, 1, col)))
    fig.update_xaxes(showticklabels=False, showgrid=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, ticks="")
    return style(fig, height=460, title=f"t-SNE of {TSNE_CLASSES} unseen test classes (colour and shape: class)")


# ---- 5. the retrieval gallery ------------------------------------------------------------------------------

GALLERY_QUERIES = 12
TOP = 8


def _framed(images: np.ndarray, correct: list[bool | None], pad: int = 3) -> np.ndarray:
    """uint8 ``(n, S, S)`` → one RGB strip ``(3, S + 2·pad, n·(S + 2·pad + 2))``: each image framed
    green (correct), red (wrong) or grey (the query)."""
    n, size, _ = images.shape
    cell = size + 2 * pad
    strip = np.full((3, cell, n * (cell + 2)), 255, np.uint8)
    colours = {True: (46, 160, 67), False: (214, 39, 40), None: (120, 120, 120)}
    for i, (image, ok) in enumerate(zip(images, correct)):
        x = i * (cell + 2)
        strip[:, :, x:x + cell] = np.array(colours[ok], np.uint8)[:, None, None]
        strip[:, pad:pad + size, x + pad:x + pad + size] = image[None]
    return strip


def plot_gallery(results: dict) -> go.Figure:
    """One query per test class and its top-8 neighbours by the teacher (top strip) and by the SLADE
    student (bottom), framed green when they share the query's class; a slider over queries."""
    data = _test_set(results)
    classes = data.y_test.unique()[:GALLERY_QUERIES]
    queries = [int((data.y_test == c).nonzero()[0]) for c in classes]
    rows = (experiment.TEACHER, experiment.SLADE)
    neighbours = {row: nearest_neighbours(runs.embed(_net(results, experiment.first_seed(results, row)["state"]),
                                                     data.X_test), TOP) for row in rows}
    # 32 grey levels: the strips compress several times smaller and look the same at this size
    pixels = ((data.X_test[:, 0] * 31).round() * (255 / 31)).round().to(torch.uint8).numpy()
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.12,
                        subplot_titles=[f"{row}: query (grey) and top {TOP}" for row in rows])
    steps = []
    for q in queries:
        traces = []
        for r, row in enumerate(rows, start=1):
            found = neighbours[row][q].tolist()
            correct = [None] + [bool(data.y_test[j] == data.y_test[q]) for j in found]
            strip = _framed(pixels[[q, *found]], correct)
            traces.append(go.Image(source=plots.png_source(strip), hoverinfo="skip", **subplot_refs(fig, r, 1)))
        hits = {row: int(sum(data.y_test[j] == data.y_test[q] for j in neighbours[row][q].tolist())) for row in rows}
        steps.append((str(q), traces, dict(title=dict(text=f"Query {q}: {hits[rows[0]]}/{TOP} correct for the teacher, "
                                                             f"{hits[rows[1]]}/{TOP} for the student"))))
    fig = plots.figure_with_slider([(label, traces) for label, traces, _ in steps], fig=fig, prefix="query image ",
                                   layout_updates=[update for *_, update in steps])
    fig.update_xaxes(showticklabels=False, showgrid=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, ticks="")
    return style(fig, height=430, margin=dict(t=90, l=20, r=20))


# ---- 6. the live explorer -----------------------------------------------------------------------------------

def teacher_file(results: dict) -> str:
    """The chapter's first-seed teacher as a weights file (the same file its students started from)."""
    cfg = experiment.config_of(results)
    kwargs = dict(kind="labeled", **experiment.teacher_kwargs(cfg, cfg.seed))
    return artifact("slade-teacher", kwargs, experiment.first_seed(results, experiment.TEACHER)["state"])


def _explorer_view(results: dict, k: int, novel_fraction: float, novel_classes: str, lambda1: float,
                   lambda2: float, delta: float, pair_source: str, select: str) -> list:
    cfg = dataclasses.replace(experiment.config_of(results), lambda2=lambda2)
    kwargs = experiment.student_kwargs(cfg, cfg.seed, teacher_file(results), pair_source=pair_source,
                                       select=select, novel_fraction=novel_fraction,
                                       novel_from_test=novel_classes == NOVEL_FROM_TEST, k=k, delta=delta,
                                       lambda1=lambda1)
    run = cached_runs("slade-run", experiment.train, [dict(kind="student", **kwargs)], workers=1)[0]
    reference = {row: experiment.first_seed(results, row) for row in (experiment.TEACHER, experiment.CONTROL,
                                                                      experiment.SLADE)}
    lines = [f"this student: test R@1 {run['test']['recall']['1']:.3f}, NMI {run['test']['nmi']:.3f}; "
             f"pseudo-label NMI {run['pseudo_quality']['nmi']:.3f}, purity {run['pseudo_quality']['purity']:.3f}; "
             f"mined positives {run['pair_counts']['pos_selected']:,} at precision {run['pair_precision']['positive']:.3f}; "
             f"AUC basis {run['auc']['basis']:.4f} vs cosine {run['auc']['cosine']:.4f}"]
    lines += [f"{row} (the chapter, seed {e['seed']}): test R@1 {e['test']['recall']['1']:.3f}"
              for row, e in reference.items() if e is not None]
    fake = dict(results, rows={"this student": [run]})
    fig = plot_similarity_histograms(fake, row="this student")
    return [widgets.Message("\n".join(lines)), fig]


NOVEL_UNSEEN, NOVEL_FROM_TEST = "classes no set has", "the test classes (as the paper's external pools may)"


def student_explorer(results: dict) -> widgets.Explorer:
    """Live in JupyterLab: k, the novel fraction and where its classes come from, λ₁, λ₂, δ, the pair
    source and the rule → train one student from the chapter's first-seed teacher (the chapter's
    cache; a few seconds at quick)."""
    config = results["config"]
    chosen = results["chosen"]
    controls = {"k": widgets.selection_slider("k", [20, 30, 45, 60, 90, 120], chosen["k"]),
                "novel_fraction": widgets.selection_slider("novel fraction", [0.0, 0.25, 0.5, 0.75, 1.0],
                                                           config["novel_fraction"]),
                "novel_classes": widgets.dropdown("novel images from", (NOVEL_UNSEEN, NOVEL_FROM_TEST)),
                "lambda1": widgets.selection_slider("λ₁", [0.0, 0.25, 0.5, 1.0, 2.0, 4.0], chosen["lambda1"]),
                "lambda2": widgets.selection_slider("λ₂", [0.0, 0.25, 0.5, 1.0, 2.0], config["lambda2"]),
                "delta": widgets.selection_slider("δ", list(student.DELTAS), chosen["delta"]),
                "pair_source": widgets.dropdown("pairs", student.PAIR_SOURCES, "basis"),
                "select": widgets.dropdown("rule", ("sim+label", "sim"), "sim+label")}
    return widgets.explorer(controls, lambda **values: _explorer_view(results, **values), button="Train",
                            title="Train one SLADE student from the chapter's teacher", render_now=False)
