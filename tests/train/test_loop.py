import pytest
import torch

from labkit.train import Hook, History, every, fit


def _regression(seed=0):
    torch.manual_seed(seed)
    X = torch.randn(64, 3)
    y = X @ torch.tensor([1.0, -2.0, 0.5])
    return X, y


def test_fit_reduces_loss_and_logs_every_step(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    X, y = _regression()
    model = torch.nn.Linear(3, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(batch, i):
        xb, yb = batch
        return {"loss": ((model(xb).squeeze(1) - yb) ** 2).mean()}

    history = fit(model, [(X, y)], step, [opt], num_steps=50)
    assert len(history["loss"]) == 50 and history.steps["loss"][-1] == 49
    assert history["loss"][-1] < 0.01 * history["loss"][0]


def test_fit_matches_bare_loop_exactly(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    X, y = _regression()
    weights = []
    for use_fit in (True, False):
        torch.manual_seed(1)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss_fn = lambda: ((model(X).squeeze(1) - y) ** 2).mean()  # noqa: E731
        if use_fit:
            fit(model, [None], lambda b, i: {"loss": loss_fn()}, [opt], num_steps=20)
        else:
            for _ in range(20):
                opt.zero_grad()
                loss_fn().backward()
                opt.step()
        weights.append(model.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_hooks_eval_and_early_stop(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    seen = {"eval": [], "end": 0, "every": []}

    class Recorder(Hook):
        def on_eval(self, state):
            seen["eval"].append(state.step)
            state.history.log(state.step, val=state.step * 2)

        def after_step(self, state):
            state.stop = state.step == 7

        def on_end(self, state):
            seen["end"] += 1

    history = fit(None, iter(range(100)), lambda b, i: {"x": b}, num_steps=20, eval_every=3,
                  hooks=[Recorder(), every(2, lambda s: seen["every"].append(s.step))])
    assert seen["eval"] == [2, 5] and seen["end"] == 1 and seen["every"] == [1, 3, 5, 7]
    assert history["x"] == list(range(8)) and history["val"] == [4, 10]


def test_step_fn_owning_its_updates_and_history_roundtrip(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "text")
    history = fit(None, [1, 2], lambda b, i: {"b": b}, num_steps=5, log_every=2)
    assert history.steps["b"] == [0, 2, 4] and history["b"] == [1, 1, 1]
    again = History.from_dict(history.to_dict())
    assert again["b"] == history["b"] and again.steps["b"] == history.steps["b"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_steps=-1"):
        fit(None, [1], lambda b, i: {}, num_steps=-1)
    with pytest.raises(ValueError, match="n=0"):
        every(0, print)
