"""Chapter 02 — Knowledge evolution: the config, the runs, the ablations and the claims.

``run(cfg)`` trains everything the chapter shows (every run cached, runs spread over the cores);
``claims(results)`` measures the spec's "Expected outcomes" on them. Every comparison claim is judged
by the shared rule of ``labkit.report``: a two-level bootstrap over training seeds and test items
(each run stores which test items it got right), paired by seed and item where two runs share
them. Runs of one seed share their initialisation and training data across modes.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import torch

from labkit.cache import cached_runs
from labkit.config import check_device, workers_for
from labkit.config import from_budget as _from_budget
from labkit.experiments.knowledge_evolution_runs import train_generations
from labkit.methods import knowledge_evolution as ke
from labkit.metrics import count_cost
from labkit.models import make_backbone
from labkit.report import Claim, bootstrap_difference

TITLE = "Knowledge Evolution in Neural Networks"
CHAPTER = "02-knowledge-evolution"
CONTROLS = ("ke", "single", "restart_only", "full_reset")
SIZE_MODES = ("ke", "single")  # the data-size sweep: KE against its compute-matched run
BATCH_SIZE = 32  # train_generations' default, used to match steps across training-set sizes


@dataclasses.dataclass
class KEConfig:
    """Defaults are the quick budget; ``BUDGETS`` lists what the other budgets change."""

    budget: str = "quick"
    seed: int = 0
    device: str = "cpu"  # "cuda" on a GPU machine (the runs then go in this process)
    workers: int = 0  # 0: one process per core
    # the main experiment: KE and its controls on few-shot digits
    dataset: str = "digits"
    samples_per_class: int = 15
    image_size: int = 16
    backbone: str = "resnet"
    split_kind: str = "kels"
    split_rate: float = 0.5
    num_generations: int = 4
    epochs_per_generation: int = 15
    num_seeds: int = 2
    # ablations (one seed each, shorter); empty tuples skip them
    ablation_generations: int = 5
    ablation_epochs: int = 15
    ablation_split_rates: tuple = ()
    ablation_reset_distributions: tuple = ()
    ablation_wels: bool = False
    ablation_plain: bool = False
    # training-set sizes (images per class): KE and its compute-matched run at each, the same SGD
    # steps per generation at every size, scored on one test set; empty skips the sweep
    size_sweep: tuple = ()
    size_sweep_seeds: int = 3
    # a second, fine-grained dataset (glyphs), one seed; 0 classes skips it
    glyph_classes: int = 0
    glyph_samples_per_class: int = 15
    glyph_image_size: int = 32
    # slim cost at these split rates (counted by hooks; no training)
    cost_split_rates: tuple = (0.25, 0.5, 0.75)


BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(num_generations=2, epochs_per_generation=1, samples_per_class=5, num_seeds=1),
    "quick": {},
    "full": dict(num_generations=8, epochs_per_generation=20, num_seeds=5, ablation_split_rates=(0.25, 0.75),
                 ablation_reset_distributions=("normal", "zeros"), ablation_wels=True, ablation_plain=True,
                 size_sweep=(5, 15, 50), size_sweep_seeds=5, glyph_classes=20),
}


def from_budget(budget: str = "quick", **overrides: Any) -> KEConfig:
    cfg = _from_budget(KEConfig, budget, BUDGETS, **overrides)
    check_device(cfg.device)
    return cfg


def _base(cfg: KEConfig) -> dict[str, Any]:
    return dict(dataset=cfg.dataset, samples_per_class=cfg.samples_per_class, image_size=cfg.image_size,
                backbone=cfg.backbone, split_kind=cfg.split_kind, split_rate=cfg.split_rate,
                num_generations=cfg.num_generations, epochs_per_generation=cfg.epochs_per_generation,
                device=cfg.device)


def main_runs(cfg: KEConfig) -> list[dict[str, Any]]:
    """KE and the three controls, every seed."""
    return [_base(cfg) | dict(mode=mode, seed=cfg.seed + i)
            for mode, i in itertools.product(CONTROLS, range(cfg.num_seeds))]


def _short(cfg: KEConfig) -> dict[str, Any]:
    """The ablations' KE run: the main run with fewer, shorter generations and one seed."""
    return _base(cfg) | dict(mode="ke", seed=cfg.seed, num_generations=cfg.ablation_generations,
                             epochs_per_generation=cfg.ablation_epochs)


def ablation_runs(cfg: KEConfig) -> list[tuple[str, dict[str, Any]]]:
    """(label, run) pairs: one KE run per ablation row, plus the reference row they change."""
    short = _short(cfg)
    rows = []
    if cfg.ablation_split_rates or cfg.ablation_reset_distributions or cfg.ablation_wels or cfg.ablation_plain:
        rows.append((f"reference (KELS, s_r {cfg.split_rate:g}, default reset, {cfg.samples_per_class}/class, "
                     "ResNet)", short))
    rows += [(f"KELS, s_r {rate}", short | dict(split_rate=rate)) for rate in cfg.ablation_split_rates]
    rows += [(f"reset from {dist}", short | dict(reset_distribution=dist)) for dist in cfg.ablation_reset_distributions]
    if cfg.ablation_wels:
        rows.append(("WELS (weight-level split)", short | dict(split_kind="wels")))
    if cfg.ablation_plain:
        rows.append(("plain 3-conv net", short | dict(backbone="plain")))
    return rows


def size_sweep_steps(cfg: KEConfig) -> int:
    """SGD steps per generation at every size of the sweep: what the ablations' reference run
    (``samples_per_class`` images per class, ``ablation_epochs`` epochs) takes."""
    num_train = cfg.samples_per_class * 10  # digits: ten classes
    return cfg.ablation_epochs * math.ceil(num_train / BATCH_SIZE)


def size_runs(cfg: KEConfig) -> list[dict[str, Any]]:
    """KE and its compute-matched single run at each training-set size, every seed; the same steps
    per generation at every size, all scored on the test part of the largest size's split."""
    if not cfg.size_sweep:
        return []
    short = _short(cfg) | dict(steps_per_generation=size_sweep_steps(cfg), test_samples_per_class=max(cfg.size_sweep))
    return [short | dict(samples_per_class=n, mode=mode, seed=cfg.seed + i)
            for n, mode, i in itertools.product(cfg.size_sweep, SIZE_MODES, range(cfg.size_sweep_seeds))]


def glyph_runs(cfg: KEConfig) -> list[dict[str, Any]]:
    if not cfg.glyph_classes:
        return []
    glyphs = _base(cfg) | dict(dataset="glyphs", num_classes=cfg.glyph_classes,
                               samples_per_class=cfg.glyph_samples_per_class,
                               image_size=cfg.glyph_image_size, seed=cfg.seed,
                               num_generations=cfg.ablation_generations, epochs_per_generation=cfg.ablation_epochs)
    return [glyphs | dict(mode="ke"), glyphs | dict(mode="single")]


def slim_costs(cfg: KEConfig, num_classes: int = 10) -> list[dict[str, Any]]:
    """Parameters and MACs of the dense net and of the slim net at each split rate, by forward hooks."""
    shape = (1, 1, cfg.image_size, cfg.image_size)
    rates = sorted({*cfg.cost_split_rates, cfg.split_rate, *cfg.ablation_split_rates})
    rows = []
    for backbone in ("resnet", "plain"):
        dense = count_cost(make_backbone(backbone, num_classes=num_classes), shape)
        for rate in rates:
            slim = count_cost(make_backbone(backbone, num_classes=num_classes, width_multiplier=rate), shape)
            rows.append(dict(backbone=backbone, split_rate=rate, dense_params=dense["params"],
                             dense_macs=dense["macs"], slim_params=slim["params"], slim_macs=slim["macs"],
                             conv_macs_ratio=slim["conv_macs"] / dense["conv_macs"],
                             conv_params_ratio=slim["conv_params"] / dense["conv_params"]))
    return rows


def mask_examples(cfg: KEConfig) -> dict[str, Any]:
    """One conv layer's (C_o, C_i) fraction of fit weights per kernel, KELS and WELS, at a few split rates."""
    model = make_backbone(cfg.backbone, num_classes=10)
    layer = "stages.1.conv1.weight" if cfg.backbone == "resnet" else "blocks.1.0.weight"
    rates = sorted({0.25, 0.5, 0.75, cfg.split_rate})
    out = {"layer": layer, "split_rates": rates}
    for kind in ("kels", "wels"):
        out[kind] = [ke.split_masks(model, kind, rate, torch.Generator().manual_seed(0))[layer]
                     .float().mean(dim=(2, 3)).numpy() for rate in rates]
    return out


def run(cfg: KEConfig) -> dict[str, Any]:
    """Everything the chapter shows, as plain data. Every training run goes to ``cfg.device``; the
    slim costs and mask examples count and draw on the CPU (the same numbers on any device)."""
    ablations = ablation_runs(cfg)
    planned = {"main": main_runs(cfg), "ablation": [run for _, run in ablations], "sizes": size_runs(cfg),
               "glyphs": glyph_runs(cfg)}
    done = iter(cached_runs("ke-generations", train_generations, sum(planned.values(), []),
                            workers_for(cfg.device, cfg.workers)))
    results = {name: [next(done) for _ in runs] for name, runs in planned.items()}
    return results | {"config": dataclasses.asdict(cfg), "ablation_labels": [label for label, _ in ablations],
                      "costs": slim_costs(cfg), "masks": mask_examples(cfg)}


# ---- summaries -------------------------------------------------------------------------------

def runs_of(results: dict, mode: str, section: str = "main", **where: Any) -> list[dict]:
    """The runs of ``mode`` in ``section`` (matching ``where``), sorted by seed so modes pair up."""
    runs = [r for r in results.get(section, []) if r["mode"] == mode and all(r[k] == v for k, v in where.items())]
    return sorted(runs, key=lambda r: r["seed"])


def curves(results: dict, section: str = "main") -> dict[str, dict[str, np.ndarray]]:
    """Per mode: mean and std over seeds of dense, slim and train accuracy per generation."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in results[section]):
        runs = runs_of(results, mode, section)
        out[mode] = {key: np.stack([r[key] for r in runs]) for key in ("dense", "slim", "train")}
        out[mode] |= {f"{key}_mean": out[mode][key].mean(0) for key in ("dense", "slim", "train")}
        out[mode] |= {f"{key}_std": out[mode][key].std(0) for key in ("dense", "slim", "train")}
    return out


def generation_table(results: dict) -> list[dict[str, Any]]:
    """One row per generation: KE dense and slim, the controls, mean and std over seeds."""
    c = curves(results)
    columns = dict(ke_dense=("ke", "dense"), ke_slim=("ke", "slim"), compute_matched=("single", "dense"),
                   restart_only=("restart_only", "dense"), restart_only_slim=("restart_only", "slim"),
                   full_reset=("full_reset", "dense"))
    rows = []
    for g in range(len(c["ke"]["dense_mean"])):
        row = dict(generation=g + 1)
        for name, (mode, key) in columns.items():
            row[name], row[f"{name}_std"] = float(c[mode][f"{key}_mean"][g]), float(c[mode][f"{key}_std"][g])
        rows.append(row)
    return rows


def ablation_table(results: dict) -> list[dict[str, Any]]:
    rows = []
    for label, run in zip(results["ablation_labels"], results["ablation"]):
        rows.append(dict(row=label, n1_dense=float(run["dense"][0]), final_dense=float(run["dense"][-1]),
                         gain=float(run["dense"][-1] - run["dense"][0]),
                         final_slim=float(run["slim"][-1]), chance=run["chance"]))
    return rows


def size_table(results: dict) -> list[dict[str, Any]]:
    """Per training-set size: KE at N1 and N_G, its compute-matched run, both gains; mean and std
    over seeds."""
    rows = []
    for n in sorted({r["samples_per_class"] for r in results.get("sizes", [])}):
        ke_runs, single = runs_of(results, "ke", "sizes", samples_per_class=n), \
            runs_of(results, "single", "sizes", samples_per_class=n)
        values = dict(n1=[r["dense"][0] for r in ke_runs], final=[r["dense"][-1] for r in ke_runs],
                      matched=[r["dense"][-1] for r in single])
        values |= dict(gain_n1=np.subtract(values["final"], values["n1"]),
                       gain_matched=np.subtract(values["final"], values["matched"]))
        row = dict(samples_per_class=n, steps_per_generation=ke_runs[0]["steps_per_generation"],
                   epochs_per_generation=ke_runs[0]["epochs_per_generation"], num_seeds=len(ke_runs))
        for key, v in values.items():
            row[key], row[f"{key}_std"] = float(np.mean(v)), float(np.std(v)) if len(v) > 1 else None
        rows.append(row)
    return rows


def slim_tradeoff(results: dict) -> list[dict[str, Any]]:
    """Slim accuracy at N_G against slim cost, one row per split rate: the ablation runs that change
    only s_r when the budget has them (one seed each), else the main KE runs."""
    cfg = results["config"]
    rows = [run for run in results.get("ablation", []) if run["split_kind"] == "kels"
            and run["reset_distribution"] == "default" and run["backbone"] == cfg["backbone"]]
    by_rate = len(rows) > 1
    groups = {run["split_rate"]: [run] for run in rows} if by_rate else {cfg["split_rate"]: runs_of(results, "ke")}
    source = "ablation runs" if by_rate else "main runs"
    out = []
    for rate, runs in sorted(groups.items()):
        cost = next(c for c in results["costs"] if c["backbone"] == runs[0]["backbone"] and c["split_rate"] == rate)
        slim, dense = [float(r["slim"][-1]) for r in runs], [float(r["dense"][-1]) for r in runs]
        out.append(dict(split_rate=rate, slim_macs=cost["slim_macs"], dense_macs=cost["dense_macs"],
                        macs_fraction=cost["slim_macs"] / cost["dense_macs"], slim_params=cost["slim_params"],
                        slim_accuracy=float(np.mean(slim)),
                        slim_std=float(np.std(slim)) if len(runs) > 1 else None,
                        dense_accuracy=float(np.mean(dense)), num_seeds=len(runs), source=source,
                        generations=len(runs[0]["dense"])))
    return out


def glyph_summary(results: dict) -> str:
    """One sentence on the glyph runs (full budget), or why there are none."""
    if not results["glyphs"]:
        return "The glyph dataset runs at the full budget."
    ke_run = next(r for r in results["glyphs"] if r["mode"] == "ke")
    single = next(r for r in results["glyphs"] if r["mode"] == "single")
    return (f"Glyphs ({ke_run['num_classes']} classes, {ke_run['samples_per_class']} images per class, "
            f"chance {ke_run['chance']:.3f}, one seed): KE dense {ke_run['dense'][0]:.3f} (N1) → "
            f"{ke_run['dense'][-1]:.3f} (N{len(ke_run['dense'])}), slim {ke_run['slim'][0]:.3f} → "
            f"{ke_run['slim'][-1]:.3f}; the compute-matched run reaches {single['dense'][-1]:.3f}.")


# ---- claims ----------------------------------------------------------------------------------

def _paired_runs(results: dict, modes: tuple[str, ...], section: str = "main", **where: Any) -> list[list[dict]]:
    """The runs of each of ``modes``, sorted by seed; every mode must have the same seeds."""
    groups = [runs_of(results, mode, section, **where) for mode in modes]
    seeds = [[r["seed"] for r in runs] for runs in groups]
    if not seeds[0] or any(s != seeds[0] for s in seeds):
        raise ValueError(f"claims pair runs by seed, but the {section} runs have seeds "
                         f"{dict(zip(modes, seeds))} (where {where})")
    return groups


def _correct(runs: list[dict], key: str = "dense_correct") -> list[np.ndarray]:
    """Per seed, the ``(G, n)`` 0/1 correctness of every test item after each generation."""
    return [np.asarray(r[key], dtype=float) for r in runs]


def _at(correct: list[np.ndarray], generation: int) -> list[np.ndarray]:
    return [c[generation] for c in correct]


def _noise(runs: list[dict], key: str = "dense_correct") -> str:
    items = np.shape(runs[0][key])[-1]
    return (f"two-level bootstrap over {len(runs)} training seed(s) and {items} test images; runs of one "
            "seed share their initialisation and data, and a difference is taken image by image")


def _max_over_generations(correct: np.ndarray) -> float:
    """``correct`` is ``(n, G)``: the best per-generation accuracy."""
    return float(correct.mean(0).max())


def claims(results: dict) -> list[Claim]:
    """The spec's "Expected outcomes" 1–6, measured on ``results`` and judged by the shared rule."""
    chance = results["main"][0]["chance"]
    ke_runs, single, restart, full_reset = _paired_runs(results, CONTROLS)
    dense, slim = _correct(ke_runs), _correct(ke_runs, "slim_correct")
    G, noise = len(dense[0]), _noise(ke_runs)
    return [Claim.compare("1. slim N1 starts near chance", "Flower102 log: 1.53 % slim at g = 1",
                         bootstrap_difference(_at(slim, 0)), threshold=2 * chance, direction="<",
                         check=f"slim accuracy of N1 < 2 × chance = {2 * chance:.2f}",
                         asserted_at=("quick", "full"), detail=noise),
           Claim.compare("2a. slim rises over generations", "slim 1.5 → 61.9 % (Flower102, 10 gens)",
                         bootstrap_difference(_at(slim, -1), _at(slim, 0)), check=f"slim(N{G}) − slim(N1) > 0",
                         asserted_at=("quick", "full"), detail=noise),
           Claim.compare("2b. slim within 3 points of dense at the last generation",
                         "slim = dense by the last generation", bootstrap_difference(_at(dense, -1), _at(slim, -1)),
                         threshold=0.03, direction="<", check=f"dense(N{G}) − slim(N{G}) < 0.03", detail=noise),
           _cost_claim(results),
           Claim.compare("4a. dense at the last generation above N1", "up to +21 % absolute (abstract)",
                         bootstrap_difference(_at(dense, -1), _at(dense, 0)), check=f"dense(N{G}) − dense(N1) > 0",
                         detail=f"{noise}. N{G} has trained {G}× the epochs of N1: 4b is the compute-matched test"),
           Claim.compare("4b. KE dense beats the compute-matched run", "not reported in the paper",
                         bootstrap_difference(_at(dense, -1), _at(_correct(single), -1)),
                         check=f"dense(N{G}) − one run of the same {G}·e epochs > 0",
                         detail=f"{noise}. The spec's honest note: at small scale extra epochs may explain the gain"),
           _size_claim(results),
           Claim.compare("6a. restart-only keeps slim near chance", "re-initialisation builds the slim net",
                         bootstrap_difference([c.T for c in _correct(restart, "slim_correct")],
                                              statistic=_max_over_generations),
                         threshold=2 * chance, direction="<",
                         check=f"best slim accuracy over generations < 2 × chance = {2 * chance:.2f}",
                         asserted_at=("quick", "full"), detail=_noise(restart)),
           Claim.compare("6b. full reset does not accumulate", "full reset ≈ N1 every generation",
                         bootstrap_difference(_at(_correct(full_reset), -1), _at(_correct(full_reset), 0)),
                         threshold=0.02, direction="<", check=f"dense(N{G}) − dense(N1) < 0.02 under full reset",
                         detail=_noise(full_reset))]


def _cost_claim(results: dict) -> Claim:
    """The slim net's saving in MACs, an observation (the ≈ s_r² ratio is a unit test)."""
    cfg = results["config"]
    cost = next(row for row in results["costs"] if row["backbone"] == cfg["backbone"]
                and row["split_rate"] == cfg["split_rate"])
    saving = 1 - cost["slim_macs"] / cost["dense_macs"]
    return Claim.reported(f"3. slim net cost at s_r {cfg['split_rate']:g}", "−73 % GOps (ResNet18, s_r 0.5)",
                          float(saving), check="observation: 1 − slim MACs / dense MACs, counted by forward hooks",
                          detail=f"conv MACs {cost['conv_macs_ratio']:.3f} and conv parameters "
                                 f"{cost['conv_params_ratio']:.3f} of dense (s_r² = {cfg['split_rate'] ** 2:.3f})")


def _size_claim(results: dict) -> Claim:
    """Claim 5: KE's gain over its compute-matched run, fewest against most images per class."""
    name, paper = "5. gain larger with fewer images per class", "KE targets small data"
    sizes = sorted({r["samples_per_class"] for r in results.get("sizes", [])})
    if len(sizes) < 2:
        return Claim.not_measured(name, paper, check="gain(fewest/class) − gain(most/class) > 0",
                                  detail="the data-size sweep runs at the full budget")
    few, many = (_paired_runs(results, SIZE_MODES, "sizes", samples_per_class=n) for n in (sizes[0], sizes[-1]))

    def gain(runs: list[list[dict]]) -> list[np.ndarray]:  # per seed, per test image: KE − compute-matched
        ke_runs, single = runs
        return [k - s for k, s in zip(_at(_correct(ke_runs), -1), _at(_correct(single), -1))]

    run = few[0][0]
    return Claim.compare(name, paper, bootstrap_difference(gain(few), gain(many)),
                         check=f"gain({sizes[0]}/class) − gain({sizes[-1]}/class) > 0",
                         detail=f"gain = KE dense(N{run['num_generations']}) − its compute-matched single run "
                                f"(same data, seed and steps); every size trains {run['steps_per_generation']} "
                                f"SGD steps per generation and is scored on the same test images; "
                                f"{_noise(few[0])}")


def dense_gain_verdict(results: dict, claims: list[Claim]) -> str:
    """Where the dense gain comes from, in words that follow claims 4a and 4b's statuses."""
    c = curves(results)
    by_name = {claim.name.split(".")[0]: claim for claim in claims}
    over_n1, over_matched = by_name["4a"], by_name["4b"]
    G = len(c["ke"]["dense_mean"])
    epochs = G * results["config"]["epochs_per_generation"]
    lines = [f"KE dense accuracy goes from {c['ke']['dense_mean'][0]:.3f} (N1) to {c['ke']['dense_mean'][-1]:.3f} "
             f"(N{G}); one run of {epochs} epochs reaches {c['single']['dense_mean'][-1]:.3f}, and the "
             f"restart-only control {c['restart_only']['dense_mean'][-1]:.3f} (means over seeds)."]
    gain = f"{over_n1.measured:+.3f}, 95 % interval {over_n1.interval_text()}"
    lines.append({"held": f"The gain over N1 ({gain}) is held.",
                  "not reproduced": f"KE ends below N1 ({gain}).",
                  "inconclusive": f"The gain over N1 ({gain}) is within noise."}[over_n1.status])
    versus = f"{over_matched.measured:+.3f}, 95 % interval {over_matched.interval_text()}"
    lines.append({"held": f"KE beats the compute-matched run ({versus}): re-initialisation adds to what the "
                          "extra epochs give.",
                  "not reproduced": f"The compute-matched run beats KE ({versus}): at this scale the dense gain "
                                    "comes from the extra epochs, not from re-initialisation.",
                  "inconclusive": f"KE against the compute-matched run is within noise ({versus}): at this "
                                  "budget nothing shows that re-initialisation adds to what the extra epochs "
                                  "give."}[over_matched.status])
    return " ".join(lines)
