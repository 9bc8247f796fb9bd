import pytest
import torch
from torch import nn

from labkit.models import ACTIVATIONS, MLP, make_embedding_net, ring_gan_models


def test_mlp_layer_widths_and_output_shape():
    model = MLP(64, (128, 32), 16)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 32), (32, 16)]
    assert model(torch.randn(7, 64)).shape == (7, 16)


def test_no_activation_after_the_last_layer():
    model = MLP(4, (8,), 3)
    assert isinstance(model.layers[-1], nn.Linear)
    assert (model(torch.randn(200, 4)) < 0).any()  # a final ReLU would clip these


def test_empty_hidden_is_a_single_linear_layer():
    model = MLP(4, (), out_features=2)
    assert len(model.layers) == 1 and isinstance(model.layers[0], nn.Linear)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_registered_activation_builds(name):
    model = MLP(3, (5, 5), 2, activation=name)
    assert type(model.layers[1]) is type(ACTIVATIONS[name]())
    assert model(torch.randn(4, 3)).shape == (4, 2)


def test_normalized_output_has_unit_rows_and_plain_output_does_not():
    torch.manual_seed(0)
    x = torch.randn(10, 64)
    normalized = make_embedding_net(64, 16)
    assert normalized(x).shape == (10, 16)
    assert torch.allclose(normalized(x).norm(dim=1), torch.ones(10), atol=1e-6)
    assert not torch.allclose(MLP(64, out_features=16)(x).norm(dim=1), torch.ones(10), atol=1e-3)


def test_normalized_output_keeps_gradients():
    model = make_embedding_net(8, 4)
    model(torch.randn(6, 8)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_ring_gan_models_shapes():
    generator, discriminator = ring_gan_models(latent_dim=16, hidden=128)
    assert generator.in_features == 16 and generator.hidden == (128, 128)
    fake = generator(torch.randn(256, 16))
    assert fake.shape == (256, 2)
    assert discriminator(fake).shape == (256, 1)
    assert not generator.normalize_output and not discriminator.normalize_output


@pytest.mark.parametrize("call, name", [
    (lambda: MLP(64, (128,)), "out_features"),
    (lambda: MLP(0, (128,), 2), "in_features"),
    (lambda: MLP(64, (128,), 0), "out_features"),
    (lambda: MLP(64, (128, 0), 2), "hidden"),
    (lambda: MLP(64, 128, 2), "hidden"),
    (lambda: MLP(64, (128,), 2, activation="swish"), "activation"),
    (lambda: make_embedding_net(64, 0), "embedding_dim"),
    (lambda: ring_gan_models(latent_dim=0), "latent_dim"),
    (lambda: ring_gan_models(hidden=0), "hidden"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
