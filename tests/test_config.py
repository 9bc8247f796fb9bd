import dataclasses

import pytest
import torch

from labkit.config import check_choice, check_range, from_budget, pick_device, seed_all


@dataclasses.dataclass
class Toy:
    budget: str = "quick"
    num_steps: int = 10
    lr: float = 0.1
    use_extra: bool = False
    lrs: tuple = (0.1, 0.01)


BUDGETS = {"smoke": {"num_steps": 2}, "full": {"num_steps": 100, "lrs": (0.5, 0.1, 0.01)}}


def test_check_choice_names_parameter_and_allowed_values():
    assert check_choice("loss", "a", ["a", "b"]) == "a"
    with pytest.raises(ValueError, match=r"loss='c' is not valid; choose one of: 'a', 'b'"):
        check_choice("loss", "c", ["a", "b"])


def test_check_range_open_and_closed():
    assert check_range("p", 0.5, 0, 1, low_open=True, high_open=True) == 0.5
    with pytest.raises(ValueError, match=r"p=1 is out of range; it must lie in \(0, 1\)"):
        check_range("p", 1, 0, 1, low_open=True, high_open=True)
    assert check_range("p", 1, 0, 1) == 1


def test_from_budget_applies_budget_then_overrides():
    assert from_budget(Toy, "quick").num_steps == 10
    assert from_budget(Toy, "smoke", BUDGETS).num_steps == 2
    cfg = from_budget(Toy, "full", BUDGETS, lr=1)
    assert cfg.num_steps == 100 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.budget == "full" and cfg.lrs == (0.5, 0.1, 0.01)


def test_from_budget_rejects_unknown_field_listing_valid_ones():
    with pytest.raises(ValueError, match="unknown config field.*num_stepz.*valid fields: budget, lr, lrs"):
        from_budget(Toy, "quick", num_stepz=3)


def test_from_budget_rejects_unknown_budget_and_bad_types():
    with pytest.raises(ValueError, match="budget='huge'.*'smoke', 'quick', 'full'"):
        from_budget(Toy, "huge")
    with pytest.raises(TypeError, match="num_steps=2.5 has the wrong type"):
        from_budget(Toy, "quick", num_steps=2.5)
    with pytest.raises(TypeError, match="lr='fast'"):
        from_budget(Toy, "quick", lr="fast")
    with pytest.raises(TypeError, match="num_steps=True"):
        from_budget(Toy, "quick", num_steps=True)
    assert from_budget(Toy, "quick", use_extra="true").use_extra is True


def test_seed_all_is_reproducible():
    seed_all(3)
    a = torch.rand(4)
    gen = seed_all(3)
    assert torch.equal(a, torch.rand(4))
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=torch.Generator().manual_seed(3)))


def test_pick_device(monkeypatch):
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device='tpu'"):
        pick_device("tpu")


def test_check_device_accepts_the_cpu_and_names_the_allowed_values():
    from labkit.config import check_device, workers_for

    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device='tpu' is not valid; choose one of: 'cpu', 'cuda'"):
        check_device("tpu")
    with pytest.raises(ValueError, match="device='cuda:x' is not valid"):
        check_device("cuda:x")
    with pytest.raises(ValueError, match="device=3 is not valid"):
        check_device(3)
    assert workers_for("cpu", 0) == 0 and workers_for("cuda:0", 4) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_check_device_refuses_cuda_on_a_machine_without_it():
    from labkit.config import check_device

    with pytest.raises(ValueError, match="device='cuda' is not available.*use device='cpu'"):
        check_device("cuda")
