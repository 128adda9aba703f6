"""twophase.models: every model builds and trains, the paper's parameter counts, weight sharing,
validation and deterministic initialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.roofline import vit_every_token_forward
from twophase import models
from twophase.errors import ConfigError

SHAPES = {"MNIST": ((1, 28, 28), 10), "CIFAR-10": ((3, 32, 32), 10), "CIFAR-100": ((3, 32, 32), 100)}
PAPER = ["vit-mlp", "vit-nomlp", "vit-nomlp-wkewq", "vit-nomlp-wkewq-wvwo", "vgg5-max-relu"]

# The paper's parameter counts, derived from its overdetermination ratios (README, the models).
PAPER_COUNTS = {
    ("vit-mlp", "MNIST"): 154_000,
    ("vit-mlp", "CIFAR-10"): 161_000,
    ("vit-nomlp", "MNIST"): 55_000,
    ("vit-nomlp", "CIFAR-10"): 63_000,
    ("vit-nomlp-wkewq", "MNIST"): 43_000,
    ("vit-nomlp-wkewq", "CIFAR-10"): 51_000,
    ("vit-nomlp-wkewq-wvwo", "MNIST"): 18_000,
    ("vit-nomlp-wkewq-wvwo", "CIFAR-10"): 26_000,
    ("vgg5-max-relu", "MNIST"): 122_000,
    ("vgg5-max-relu", "CIFAR-10"): 122_000,
}


def test_names_lists_the_papers_five_first_then_the_extras():
    listed = models.names()
    assert list(listed)[:5] == PAPER
    assert "mlp" in listed
    for name, description in listed.items():
        assert isinstance(description, str) and description.strip(), name


@pytest.mark.parametrize("dataset", list(SHAPES))
@pytest.mark.parametrize("name", list(models.names()))
def test_every_model_builds_runs_forward_and_backward(name, dataset):
    shape, classes = SHAPES[dataset]
    model = models.build(name, shape, classes, seed=0)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.arange(5) % classes
    logits = model(x)
    assert logits.shape == (5, classes)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.name == name and model.input_shape == shape and model.num_classes == classes


def test_parameter_counts_match_the_paper_within_ten_percent(capsys):
    rows = []
    for name in models.names():
        counts = {}
        for dataset, (shape, classes) in SHAPES.items():
            counts[dataset] = models.count_parameters(models.build(name, shape, classes))
        rows.append((name, counts))
    with capsys.disabled():
        print("\n| model | MNIST | CIFAR-10 | CIFAR-100 |\n|---|---:|---:|---:|")
        for name, counts in rows:
            print(f"| {name} | " + " | ".join(f"{counts[d]:,}" for d in SHAPES) + " |")
    checked = 0
    for name, counts in rows:
        for dataset, count in counts.items():
            target = PAPER_COUNTS.get((name, dataset))
            if target is not None:
                assert abs(count - target) <= 0.10 * target, (name, dataset, count, target)
                checked += 1
    assert checked == len(PAPER_COUNTS)


def test_vit_mlp_count_is_the_documented_formula():
    # patch 7 -> 16 patches; conv patch embedding, class token, 17 position embeddings,
    # 3 x (2 layer norms + 4 projections + MLP 64-256-64), final layer norm, linear head.
    d, m = 64, 256
    layer = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)
    expected = (49 * d + d) + d + 17 * d + 3 * layer + 2 * d + (d * 10 + 10)
    model = models.build("vit-mlp", (1, 28, 28), 10)
    assert model.sizes["patch"] == 7
    assert models.count_parameters(model) == expected
    assert models.build("vit-mlp", (3, 32, 32), 10).sizes["patch"] == 8


def _attentions(model):
    return [m for m in model.modules() if isinstance(m, models.SelfAttention)]


def test_wkewq_uses_one_tensor_for_key_and_query():
    model = models.build("vit-nomlp-wkewq", (1, 28, 28), 10)
    attentions = _attentions(model)
    assert len(attentions) == 3
    for att in attentions:
        assert att.query is att.key
        assert att.query.weight is att.key.weight
        assert att.query.weight.data_ptr() == att.key.weight.data_ptr()
        assert sorted(n for n, _ in att.named_parameters()) == [
            "output.bias",
            "output.weight",
            "query_key.bias",
            "query_key.weight",
            "value.bias",
            "value.weight",
        ]
        assert models.count_parameters(att) == 3 * (64 * 64 + 64)
        assert att.heads == 4
    # the only difference from vit-nomlp is one 64x64 projection (+ bias) per layer
    plain = models.build("vit-nomlp", (1, 28, 28), 10)
    assert models.count_parameters(plain) - models.count_parameters(model) == 3 * (64 * 64 + 64)
    # a change to the shared matrix moves queries and keys together
    att = attentions[0]
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        att.query_key.weight.add_(1.0)
        assert torch.equal(att.query(x), att.key(x))


def test_wvwo_has_no_value_or_output_projection_and_one_head():
    model = models.build("vit-nomlp-wkewq-wvwo", (3, 32, 32), 10)
    for att in _attentions(model):
        assert att.value is None and att.output is None
        assert att.heads == 1
        assert att.query is att.key
        assert sorted(n for n, _ in att.named_parameters()) == ["query_key.bias", "query_key.weight"]
        # the output is softmax(Q K^T / sqrt(d)) applied to the input tokens themselves
        x = torch.randn(2, 17, 64, generator=torch.Generator().manual_seed(3))
        q = att.query_key(x)
        expected = torch.softmax(q @ q.transpose(1, 2) / math.sqrt(64), dim=-1) @ x
        torch.testing.assert_close(att(x), expected)


@pytest.mark.parametrize("name", ["vit-mlp", "vit-nomlp", "vit-nomlp-wkewq"])
def test_attention_matches_torch_scaled_dot_product_attention(name):
    model = models.build(name, (1, 28, 28), 10, seed=4)
    att = _attentions(model)[0]
    x = torch.randn(3, 17, 64, generator=torch.Generator().manual_seed(5))

    def heads(t):
        return t.view(3, 17, 4, 16).transpose(1, 2)

    q, k, v = heads(att.query(x)), heads(att.key(x)), heads(att.value(x))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 17, 64)
    torch.testing.assert_close(att(x), att.output(ref))


def test_mlp_only_in_vit_mlp():
    with_mlp = models.build("vit-mlp", (1, 28, 28), 10)
    blocks = [m for m in with_mlp.modules() if isinstance(m, models.EncoderBlock)]
    assert len(blocks) == 3
    for b in blocks:
        assert isinstance(b.mlp[1], nn.GELU)
        assert b.mlp[0].out_features == 256
    for name in ["vit-nomlp", "vit-nomlp-wkewq", "vit-nomlp-wkewq-wvwo"]:
        m = models.build(name, (1, 28, 28), 10)
        assert all(b.mlp is None for b in m.modules() if isinstance(b, models.EncoderBlock)), name
        assert not any(isinstance(x, nn.GELU) for x in m.modules()), name


def test_vgg5_has_five_weight_layers_max_pooling_and_relu():
    model = models.build("vgg5-max-relu", (3, 32, 32), 10)
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weight_layers) == 5
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert any(isinstance(m, nn.ReLU) for m in model.modules())
    assert not any(isinstance(m, (nn.AvgPool2d, nn.GELU, nn.Tanh)) for m in model.modules())


def test_same_seed_gives_bit_identical_weights_whatever_the_global_rng():
    torch.manual_seed(1)
    a = models.build("vit-mlp", (1, 28, 28), 10, seed=7)
    torch.manual_seed(12345)
    torch.rand(100)
    b = models.build("vit-mlp", (1, 28, 28), 10, seed=7)
    c = models.build("vit-mlp", (1, 28, 28), 10, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if "norm" not in k)


@pytest.mark.parametrize("name", list(models.names()))
def test_building_leaves_the_global_rng_alone(name):
    state = torch.get_rng_state()
    models.build(name, (3, 32, 32), 10, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_initial_weights_are_sensible():
    model = models.build("vit-mlp", (1, 28, 28), 10)
    head = model.head
    bound = 1 / math.sqrt(64)
    assert head.weight.abs().max() <= bound and head.weight.std() > bound / 4
    assert torch.equal(model.norm.weight, torch.ones(64)) and torch.equal(model.norm.bias, torch.zeros(64))
    assert 0.01 < model.pos_embed.std().item() < 0.03
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_sizes_can_be_changed():
    m = models.build("vit-mlp", (1, 28, 28), 10, patch=4, depth=2, heads=8, embed_dim=32, mlp_dim=64)
    assert m.pos_embed.shape == (1, 49 + 1, 32)
    assert len([b for b in m.modules() if isinstance(b, models.EncoderBlock)]) == 2
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    mean_pool = models.build("vit-nomlp", (1, 28, 28), 10, pool="mean")
    cls_pool = models.build("vit-nomlp", (1, 28, 28), 10)
    assert mean_pool.cls_token is None
    assert models.count_parameters(cls_pool) - models.count_parameters(mean_pool) == 2 * 64
    assert mean_pool(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    mlp = models.build("mlp", (1, 28, 28), 10, width=32, depth=2)
    assert models.count_parameters(mlp) == (784 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert models.defaults("vit-mlp")["heads"] == 4


@pytest.mark.parametrize(
    "name, kwargs, field",
    [
        ("vit-mlp", {"heads": 5}, "heads"),
        ("vit-mlp", {"patch": 5}, "patch"),
        ("vit-mlp", {"patch": 0}, "patch"),
        ("vit-mlp", {"depth": 0}, "depth"),
        ("vit-mlp", {"embed_dim": "64"}, "embed_dim"),
        ("vit-mlp", {"mlp_dim": -1}, "mlp_dim"),
        ("vit-mlp", {"pool": "max"}, "pool"),
        ("vit-mlp", {"dropout": 0.1}, "dropout"),
        ("vit-nomlp", {"mlp_dim": 256}, "mlp_dim"),
        ("vit-nomlp-wkewq-wvwo", {"heads": 4}, "heads"),
        ("vgg5-max-relu", {"widths": (32, 64)}, "widths"),
        ("vgg5-max-relu", {"hidden": 0}, "hidden"),
        ("mlp", {"width": True}, "width"),
        ("cnn-small", {"widths": [16, 0]}, "widths"),
    ],
)
def test_bad_sizes_are_refused_naming_the_field(name, kwargs, field):
    with pytest.raises(ConfigError) as info:
        models.build(name, (1, 28, 28), 10, **kwargs)
    assert field in info.value.errors
    assert isinstance(info.value, ValueError)


def test_bad_names_shapes_and_classes_are_refused():
    with pytest.raises(ConfigError) as info:
        models.build("resnet", (1, 28, 28), 10)
    assert "model" in info.value.errors and "vit-mlp" in str(info.value)
    with pytest.raises(ConfigError) as info:
        models.build("vit-mlp", (28, 28), 1)
    assert {"input_shape", "num_classes"} <= set(info.value.errors)
    with pytest.raises(ConfigError) as info:
        models.build("vgg5-max-relu", (1, 6, 6), 10)
    assert "input_shape" in info.value.errors
    with pytest.raises(ConfigError) as info:
        models.build("mlp", (1, 28, 28), 10, seed=-1)
    assert "seed" in info.value.errors
    msg = None
    try:
        models.build("vit-mlp", (1, 28, 28), 10, heads=3)
    except ConfigError as e:
        msg = str(e)
    assert msg is not None and "divisible" in msg and "64" in msg


@pytest.mark.parametrize("name", ["vit-mlp", "vit-nomlp", "vit-nomlp-wkewq", "vit-nomlp-wkewq-wvwo"])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_last_layer_computing_only_the_class_token_gives_the_same_outputs_and_gradients(name, pool):
    # float64, so that only the arithmetic's order can differ, and barely
    model = models.build(name, (1, 28, 28), 10, seed=2, pool=pool).double()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = torch.randn(6, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    params = list(model.parameters())
    out = model(x)
    ref = vit_every_token_forward(model, x)  # every layer computes every token
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    grads = torch.autograd.grad(((out - target) ** 2).sum(), params)
    ref_grads = torch.autograd.grad(((ref - target) ** 2).sum(), params)
    for p, g, r in zip(params, grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)


def test_attention_with_fewer_queries_returns_the_first_rows():
    for shared in (False, True):
        att = models.SelfAttention(32, 4, shared_qk=shared)
        x = torch.randn(2, 9, 32)
        torch.testing.assert_close(att(x, queries=3), att(x)[:, :3])
