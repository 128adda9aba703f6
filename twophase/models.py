"""The paper's models (four Vision Transformer variants and a small VGG) plus two small extras.

Use :func:`build` to make a model and :func:`names` to list them::

    model = build("vit-mlp", input_shape=(1, 28, 28), num_classes=10, seed=0)

Every model takes a float batch of shape ``(batch, C, H, W)`` and returns logits of shape
``(batch, num_classes)``.

Vision Transformers (``vit-*``)
    Pre-norm encoder: ``x = x + attention(layernorm(x))`` and, when there is an MLP,
    ``x = x + mlp(layernorm(x))``. The image is cut into non-overlapping ``patch x patch``
    squares, each projected linearly to ``embed_dim`` (a strided convolution). A learned class
    token is prepended and learned position embeddings are added; the classifier reads the class
    token after a final layer norm (``pool="cls"``, the default and the choice behind the counts
    below). ``pool="mean"`` averages the patch tokens instead and has no class token.
    Attention is written out here (not ``nn.MultiheadAttention``) so that the weight-sharing
    variants are exact:

    - ``vit-nomlp-wkewq``: one matrix ``W_qk`` (module ``query_key``) computes both queries and
      keys, so every head's score matrix is symmetric.
    - ``vit-nomlp-wkewq-wvwo``: additionally no value and no output projection; a single head
      mixes the (layer-normed) tokens themselves.

    The default patch size gives a 4 x 4 grid of patches: 7 on MNIST (28 x 28) and 8 on CIFAR
    (32 x 32). That lands the parameter counts within a few percent of the paper's.

``vgg5-max-relu``
    Five weight layers: three 3x3 convolutions (widths 32, 64, 128, each followed by ReLU and 2x2
    max pooling), a global max pool, then two linear layers (hidden 192, ReLU). The global pool
    keeps the count the same for 28 x 28 and 32 x 32 inputs (about 120k, the paper's ~122k).

``mlp``
    Flatten, ``depth`` hidden layers of ``width`` units with ReLU, linear classifier. For quick
    runs and teaching.

``cnn-small``
    Two 3x3 convolutions (16 and 32 channels, ReLU, 2x2 max pooling), global average pooling,
    linear classifier: a few thousand parameters, fast on CIFAR.

Initialisation is deterministic: the model is created on the ``meta`` device (no memory, no use
of the global random generator) and every tensor is then filled from a private
``torch.Generator`` seeded with ``seed``. The same seed gives bit-identical weights whatever the
global random state, and building a model never changes the global random state. Linear and
convolution layers use PyTorch's default scheme (weights and biases uniform in
``+-1/sqrt(fan_in)``), layer norms start at weight 1 and bias 0, the class token and position
embeddings are normal with standard deviation 0.02.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from twophase.errors import ConfigError

__all__ = [
    "names",
    "defaults",
    "build",
    "count_parameters",
    "runtime",
    "SelfAttention",
    "EncoderBlock",
    "VisionTransformer",
    "VGG5",
    "MLP",
    "SmallCNN",
]


_DESCRIPTIONS: dict[str, str] = {
    "vit-mlp": "Vision Transformer: 3 pre-norm encoder layers, 4 heads, embedding 64, GELU MLP 256",
    "vit-nomlp": "Vision Transformer without the MLP blocks (attention only)",
    "vit-nomlp-wkewq": "ViT without MLP; one matrix serves as both key and query projection",
    "vit-nomlp-wkewq-wvwo": "ViT without MLP, shared key/query matrix, no value/output projections, one head",
    "vgg5-max-relu": "VGG-style CNN: 3 conv + 2 linear weight layers, max pooling, ReLU",
    "mlp": "Small fully connected network (one hidden layer of 64 ReLU units): quick runs, teaching",
    "cnn-small": "Small CNN (two conv layers, 16/32 channels, about 5k parameters): quick CIFAR runs",
}

# Default sizes per model. ``patch=None`` means "choose a patch giving a 4 x 4 grid when possible".
_VIT_DEFAULTS: dict[str, Any] = {"depth": 3, "heads": 4, "embed_dim": 64, "mlp_dim": 256, "patch": None, "pool": "cls"}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "vit-mlp": dict(_VIT_DEFAULTS),
    "vit-nomlp": {k: v for k, v in _VIT_DEFAULTS.items() if k != "mlp_dim"},
    "vit-nomlp-wkewq": {k: v for k, v in _VIT_DEFAULTS.items() if k != "mlp_dim"},
    "vit-nomlp-wkewq-wvwo": {**{k: v for k, v in _VIT_DEFAULTS.items() if k != "mlp_dim"}, "heads": 1},
    "vgg5-max-relu": {"widths": (32, 64, 128), "hidden": 192},
    "mlp": {"width": 64, "depth": 1},
    "cnn-small": {"widths": (16, 32)},
}

POOLS = ("cls", "mean")

# How each model trains fastest on a CPU, as measured by benchmarks/roofline.py (README, "Roofline"):
# channels_last: the model's weights and the images in NHWC memory (oneDNN convolutions need no
# reorders); full_pass_chunk: samples per chunk of a full-set pass (the CG closure, the epoch's
# gradient norm). Models not listed: contiguous memory, chunks of 4096.
_RUNTIME: dict[str, dict[str, Any]] = {
    "vgg5-max-relu": {"channels_last": True, "full_pass_chunk": 512},
    "cnn-small": {"channels_last": True, "full_pass_chunk": 512},
}
_RUNTIME_DEFAULT: dict[str, Any] = {"channels_last": False, "full_pass_chunk": 4096}


def names() -> dict[str, str]:
    """Return every model name mapped to a one-line description (paper's five first)."""
    return dict(_DESCRIPTIONS)


def defaults(name: str) -> dict[str, Any]:
    """Return the default sizes of model ``name`` (the keyword arguments :func:`build` accepts).

    ``name``: a key of :func:`names`. A ``patch`` of ``None`` means the patch size is chosen from
    the image size (a 4 x 4 grid of patches where possible).
    """
    _check_name(name)
    return dict(_DEFAULTS[name])


def runtime(name: str) -> dict[str, Any]:
    """How model ``name`` runs fastest here: ``{"channels_last": bool, "full_pass_chunk": int}``.

    Neither changes what is computed, only the memory layout and how a full-set pass is split.
    """
    _check_name(name)
    return {**_RUNTIME_DEFAULT, **_RUNTIME.get(name, {})}


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable scalars in ``module`` (a shared tensor counts once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention, written out so projections can be shared.

    Arguments:
        dim: embedding size of the tokens.
        heads: number of heads; ``dim`` must be divisible by it.
        shared_qk: if True, one linear map ``query_key`` produces both queries and keys
            (``self.query is self.key``); otherwise separate ``query`` and ``key`` maps.
        value_output: if True, values come from a linear map ``value`` and the concatenated
            heads go through a linear map ``output``; if False neither exists (``value`` and
            ``output`` are None) and the heads mix the input tokens directly.
    """

    def __init__(self, dim: int, heads: int, shared_qk: bool = False, value_output: bool = True) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.shared_qk = shared_qk
        self.value_output = value_output
        if shared_qk:
            self.query_key = nn.Linear(dim, dim)
        else:
            self._query = nn.Linear(dim, dim)
            self._key = nn.Linear(dim, dim)
        if value_output:
            self.value: nn.Linear | None = nn.Linear(dim, dim)
            self.output: nn.Linear | None = nn.Linear(dim, dim)
        else:
            self.value = None
            self.output = None

    @property
    def query(self) -> nn.Linear:
        """The query projection (the same module as :attr:`key` when ``shared_qk``)."""
        return self.query_key if self.shared_qk else self._query

    @property
    def key(self) -> nn.Linear:
        """The key projection (the same module as :attr:`query` when ``shared_qk``)."""
        return self.query_key if self.shared_qk else self._key

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (b, heads, n, head_dim)

    def project(self, x: torch.Tensor, queries: int | None = None):
        """The queries (of the first ``queries`` tokens, default all), keys and values of ``x``,
        split into heads: q (b, heads, m, head_dim), k and v (b, heads, n, head_dim)."""
        m = x.shape[1] if queries is None else queries
        if self.shared_qk:
            k = self._split(self.query_key(x))
            q = k[:, :, :m]
        else:
            q = self._split(self._query(x[:, :m]))
            k = self._split(self._key(x))
        v = self._split(self.value(x) if self.value is not None else x)
        return q, k, v

    def forward(self, x: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """``x``: tokens of shape (batch, tokens, dim). Returns the same shape, or with
        ``queries=m`` only the outputs of the first m tokens (batch, m, dim): every token
        still serves as key and value, but only those m rows are queried."""
        b, n, d = x.shape
        m = n if queries is None else queries
        q, k, v = self.project(x, queries)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        mixed = torch.matmul(scores.softmax(dim=-1), v)  # (b, heads, m, head_dim)
        mixed = mixed.transpose(1, 2).reshape(b, m, d)
        return self.output(mixed) if self.output is not None else mixed


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder layer.

    Arguments:
        dim: embedding size.
        heads: attention heads.
        mlp_dim: hidden units of the GELU MLP, or None for no MLP (and no second layer norm).
        shared_qk, value_output: passed to :class:`SelfAttention`.
    """

    def __init__(
        self, dim: int, heads: int, mlp_dim: int | None, shared_qk: bool = False, value_output: bool = True
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, shared_qk=shared_qk, value_output=value_output)
        if mlp_dim is not None:
            self.norm2: nn.LayerNorm | None = nn.LayerNorm(dim)
            self.mlp: nn.Sequential | None = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        else:
            self.norm2 = None
            self.mlp = None

    def forward(self, x: torch.Tensor, queries: int | None = None) -> torch.Tensor:
        """``x``: tokens (batch, tokens, dim). Returns the same shape, or with ``queries=m``
        the first m tokens only (what a class-token head reads from the last layer)."""
        if queries is None:
            x = x + self.attention(self.norm1(x))
        else:
            x = x[:, :queries] + self.attention(self.norm1(x), queries=queries)
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


class VisionTransformer(nn.Module):
    """Vision Transformer classifier (see the module docstring).

    Arguments:
        input_shape: (channels, height, width) of the images.
        num_classes: number of output logits.
        patch: side of the square patches; must divide height and width.
        embed_dim: token size. depth: number of encoder layers. heads: attention heads.
        mlp_dim: MLP hidden units, or None for attention-only layers.
        shared_qk, value_output: attention variant (see :class:`SelfAttention`).
        pool: "cls" (class token) or "mean" (average of the patch tokens).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        patch: int,
        embed_dim: int = 64,
        depth: int = 3,
        heads: int = 4,
        mlp_dim: int | None = 256,
        shared_qk: bool = False,
        value_output: bool = True,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.patch = patch
        self.pool = pool
        self.num_patches = (h // patch) * (w // patch)
        self.patch_embed = nn.Conv2d(c, embed_dim, kernel_size=patch, stride=patch)
        tokens = self.num_patches + (1 if pool == "cls" else 0)
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, embed_dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(embed_dim, heads, mlp_dim, shared_qk=shared_qk, value_output=value_output)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images (batch, C, H, W). Returns logits (batch, num_classes)."""
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        if self.cls_token is not None:
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self.pos_embed
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # The head reads only the class token, and the layers after attention work token by
            # token: the last layer computes the class token's row alone (the same numbers, with
            # about a third less work for three layers; tests/test_models.py compares the two).
            t = block(t, queries=1 if i == last and self.cls_token is not None else None)
        t = self.norm(t)
        pooled = t[:, 0] if self.cls_token is not None else t.mean(dim=1)
        return self.head(pooled)


def conv_relu_pool_stack(channels: int, widths) -> tuple[nn.Sequential, int]:
    """3x3 convolutions (padding 1), each followed by ReLU and 2x2 max pooling; returns (stack, out channels).

    The pooling runs before the ReLU: relu(maxpool(x)) == maxpool(relu(x)) exactly (ReLU is
    monotonic), values and gradients alike, but the ReLU then touches a quarter of the elements
    (measured in benchmarks/roofline.py). Modules per layer: conv, pool, ReLU.
    """
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers), channels


class VGG5(nn.Module):
    """VGG-style network with five weight layers: three conv (3x3, ReLU, 2x2 max pool), global max
    pool, linear + ReLU, linear.

    Arguments:
        input_shape: (channels, height, width); height and width must be at least 8.
        num_classes: number of output logits.
        widths: channels of the three convolutions. hidden: units of the first linear layer.
    """

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, int, int], hidden: int
    ) -> None:
        super().__init__()
        self.features, c = conv_relu_pool_stack(input_shape[0], widths)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images (batch, C, H, W). Returns logits (batch, num_classes)."""
        f = self.features(x)
        f = torch.amax(f, dim=(2, 3))  # global max pool
        return self.classifier(f)


class MLP(nn.Module):
    """Fully connected classifier: flatten, ``depth`` x (linear ``width`` + ReLU), linear.

    Arguments:
        input_shape: (channels, height, width). num_classes: output logits.
        width: hidden units per layer. depth: number of hidden layers (0 = logistic regression).
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        n_in = input_shape[0] * input_shape[1] * input_shape[2]
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(n_in, width), nn.ReLU()]
            n_in = width
        layers.append(nn.Linear(n_in, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images (batch, C, H, W). Returns logits (batch, num_classes)."""
        return self.net(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (ReLU, 2x2 max pool), global average pool, linear classifier.

    Arguments:
        input_shape: (channels, height, width), height and width at least 4.
        num_classes: output logits. widths: channels of the two convolutions.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, widths: tuple[int, int]) -> None:
        super().__init__()
        self.features, c = conv_relu_pool_stack(input_shape[0], widths)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images (batch, C, H, W). Returns logits (batch, num_classes)."""
        return self.head(self.features(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or name not in _DESCRIPTIONS:
        raise ConfigError({"model": f"unknown model {name!r}; choose one of: {', '.join(_DESCRIPTIONS)}"})


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _divisors(n: int) -> list[int]:
    """The divisors of ``n`` (> 0) in increasing order, in O(sqrt n) steps (sizes are capped at
    MAX_PARAMETERS before any call, so this is at most about 14,000 steps)."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def _shown(v: Any) -> str:
    """``repr(v)`` for messages; an int too long for ``repr`` (over 4300 digits) is described."""
    try:
        return repr(v)
    except ValueError:
        if isinstance(v, int):
            return f"an integer of {v.bit_length()} bits"
        return f"a {type(v).__name__} holding an integer too long to print"


def _default_patch(h: int, w: int) -> int:
    """Divisor of gcd(h, w) closest to max(h, w) / 4 (ties: the smaller one): 7 for 28, 8 for 32."""
    target = max(h, w) / 4
    return min(_divisors(math.gcd(h, w)), key=lambda d: (abs(d - target), d))


def _int_tuple(v: Any, length: int) -> tuple[int, ...] | None:
    if isinstance(v, (list, tuple)) and len(v) == length and all(_is_pos_int(x) for x in v):
        return tuple(v)
    return None


def _too_large(errors: dict[str, str], key: str, value: Any, limit: int, what: str) -> None:
    """Refuse a positive integer size above ``limit`` (before any arithmetic or torch sees it)."""
    if key not in errors and isinstance(value, int) and value > limit:
        errors[key] = f"must be at most {limit:,} ({what}), got {_shown(value)}"


def _check_widths(errors: dict, full: dict, count: int) -> None:
    """The CNNs' conv channels: `count` positive integers within MAX_PARAMETERS (stored as a tuple)."""
    t = _int_tuple(full["widths"], count)
    if t is None:
        errors["widths"] = (f"must be {['', 'one', 'two', 'three'][count]} positive integers (conv channels), "
                            f"got {_shown(full['widths'])}")
    elif any(x > MAX_PARAMETERS for x in t):
        _too_large(errors, "widths", max(t), MAX_PARAMETERS, "the model would not fit in memory")
    else:
        full["widths"] = t


def _validate(
    name: str, input_shape: Any, num_classes: Any, seed: Any, sizes: dict[str, Any]
) -> tuple[tuple[int, int, int], dict[str, Any]]:
    """Check everything; raise one ConfigError listing every problem. Returns (shape, full sizes)."""
    _check_name(name)
    errors: dict[str, str] = {}
    shape: tuple[int, int, int] | None = None
    if isinstance(input_shape, (list, tuple)) and len(input_shape) == 3 and all(_is_pos_int(v) for v in input_shape):
        shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        if max(shape) > MAX_IMAGE_SIDE:  # also keeps the patch's divisor search short
            errors["input_shape"] = f"each of channels, height and width must be at most {MAX_IMAGE_SIDE:,}, got {shape}"
            shape = None
    else:
        errors["input_shape"] = f"must be three positive integers (channels, height, width), got {_shown(input_shape)}"
    if not _is_pos_int(num_classes) or num_classes < 2:
        errors["num_classes"] = f"must be an integer of at least 2, got {_shown(num_classes)}"
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        errors["seed"] = f"must be a non-negative integer, got {_shown(seed)}"

    allowed = _DEFAULTS[name]
    unknown = [k for k in sizes if k not in allowed]
    for k in unknown:
        errors[k] = f"{name} has no size {k!r}; allowed sizes: {', '.join(allowed)}"
    full = {**allowed, **{k: v for k, v in sizes.items() if k in allowed}}

    if name.startswith("vit-"):
        for k in ("depth", "heads", "embed_dim") + (("mlp_dim",) if "mlp_dim" in full else ()):
            if not _is_pos_int(full[k]):
                errors[k] = f"must be a positive integer, got {_shown(full[k])}"
            else:
                _too_large(errors, k, full[k], MAX_DEPTH if k == "depth" else MAX_PARAMETERS,
                           "layers" if k == "depth" else "the model would not fit in memory")
        if full["pool"] not in POOLS:
            errors["pool"] = f"must be one of {', '.join(POOLS)}, got {_shown(full['pool'])}"
        if name == "vit-nomlp-wkewq-wvwo" and full["heads"] != 1 and "heads" not in errors:
            errors["heads"] = (
                f"vit-nomlp-wkewq-wvwo has a single head (no value/output projections), got heads={_shown(full['heads'])}"
            )
        if "embed_dim" not in errors and "heads" not in errors and full["embed_dim"] % full["heads"] != 0:
            errors["heads"] = (
                f"embed_dim {full['embed_dim']} is not divisible by heads {full['heads']}; "
                f"choose heads among {', '.join(map(str, _divisors(full['embed_dim'])))}"
            )
        if shape is not None:
            _, h, w = shape
            if full["patch"] is None:
                full["patch"] = _default_patch(h, w)
            elif not _is_pos_int(full["patch"]):
                errors["patch"] = f"must be a positive integer, got {_shown(full['patch'])}"
            elif h % full["patch"] or w % full["patch"]:
                errors["patch"] = (
                    f"patch size {_shown(full['patch'])} does not divide the image size {h}x{w}; "
                    f"choose among {', '.join(map(str, _divisors(math.gcd(h, w))))}"
                )
    elif name == "vgg5-max-relu":
        _check_widths(errors, full, 3)
        if not _is_pos_int(full["hidden"]):
            errors["hidden"] = f"must be a positive integer, got {_shown(full['hidden'])}"
        else:
            _too_large(errors, "hidden", full["hidden"], MAX_PARAMETERS, "the model would not fit in memory")
        if shape is not None and min(shape[1], shape[2]) < 8:
            errors["input_shape"] = f"vgg5-max-relu needs images of at least 8x8 (three 2x2 poolings), got {shape}"
    elif name == "cnn-small":
        _check_widths(errors, full, 2)
        if shape is not None and min(shape[1], shape[2]) < 4:
            errors["input_shape"] = f"cnn-small needs images of at least 4x4 (two 2x2 poolings), got {shape}"
    elif name == "mlp":
        if not _is_pos_int(full["width"]):
            errors["width"] = f"must be a positive integer, got {_shown(full['width'])}"
        else:
            _too_large(errors, "width", full["width"], MAX_PARAMETERS, "the model would not fit in memory")
        d = full["depth"]
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            errors["depth"] = f"must be a non-negative integer, got {_shown(d)}"
        else:
            _too_large(errors, "depth", d, MAX_DEPTH, "layers")

    # The size of the model, counted without building it (instant for any sizes). Divisibility
    # (heads) does not change the count, so a model too large is reported alongside it.
    if shape is not None and not set(errors) - {"heads"}:
        count = parameter_count(name, shape, num_classes, full)
        if count > MAX_PARAMETERS:
            given = ", ".join(f"{k}={_shown(v)}" for k, v in sizes.items()) or "the defaults"
            errors["model_sizes"] = (f"these sizes ({given}) give {count:,} parameters; at most {MAX_PARAMETERS:,} "
                                     "are allowed (the model would not fit in memory)")
    if errors:
        raise ConfigError(errors)
    assert shape is not None
    return shape, full


def parameter_count(name: str, input_shape: tuple[int, int, int], num_classes: int, sizes: dict[str, Any]) -> int:
    """Number of trainable parameters of model ``name`` with the full, valid ``sizes`` (as
    returned by :func:`check`), computed from the sizes alone: no module is made, so it is instant
    and exact for any sizes (tests/test_faults_round2.py compares it with the built models)."""
    c, h, w = input_shape
    k = num_classes

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    def conv_stack(channels: int, widths) -> tuple[int, int]:
        total = 0
        for width in widths:
            total += channels * width * 9 + width
            channels = width
        return total, channels

    if name.startswith("vit-"):
        e, p, depth = sizes["embed_dim"], sizes["patch"], sizes["depth"]
        cls = sizes["pool"] == "cls"
        tokens = (h // p) * (w // p) + (1 if cls else 0)
        shared_qk = name in ("vit-nomlp-wkewq", "vit-nomlp-wkewq-wvwo")
        value_output = name != "vit-nomlp-wkewq-wvwo"
        block = 2 * e + (1 if shared_qk else 2) * linear(e, e) + (2 * linear(e, e) if value_output else 0)
        if sizes.get("mlp_dim") is not None:
            block += 2 * e + linear(e, sizes["mlp_dim"]) + linear(sizes["mlp_dim"], e)
        return (e * c * p * p + e) + (e if cls else 0) + tokens * e + depth * block + 2 * e + linear(e, k)
    if name == "vgg5-max-relu":
        convs, channels = conv_stack(c, sizes["widths"])
        return convs + linear(channels, sizes["hidden"]) + linear(sizes["hidden"], k)
    if name == "mlp":
        width, depth = sizes["width"], sizes["depth"]
        if depth == 0:
            return linear(c * h * w, k)
        return linear(c * h * w, width) + (depth - 1) * linear(width, width) + linear(width, k)
    convs, channels = conv_stack(c, sizes["widths"])  # cnn-small
    return convs + linear(channels, k)


# --------------------------------------------------------------------------------------------
# Deterministic initialisation
# --------------------------------------------------------------------------------------------


def _uniform_fan_in(weight: torch.Tensor, bias: torch.Tensor | None, g: torch.Generator) -> None:
    fan_in = weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    weight.uniform_(-bound, bound, generator=g)
    if bias is not None:
        bias.uniform_(-bound, bound, generator=g)


@torch.no_grad()
def _initialise(model: nn.Module, seed: int) -> None:
    """Fill every parameter of ``model`` from a private generator seeded with ``seed``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            _uniform_fan_in(module.weight, module.bias, g)
            done.add(id(module.weight))
            if module.bias is not None:
                done.add(id(module.bias))
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
            done.update((id(module.weight), id(module.bias)))
    for name, p in model.named_parameters():
        if id(p) in done:
            continue
        if name.endswith("cls_token") or name.endswith("pos_embed"):
            p.normal_(0.0, 0.02, generator=g)
        else:  # pragma: no cover - a new layer type without an init rule is a programming error
            raise RuntimeError(f"no initialisation rule for parameter {name}")
    for name, b in model.named_buffers():  # pragma: no cover - none of the models has buffers
        raise RuntimeError(f"no initialisation rule for buffer {name}")


MAX_PARAMETERS = 200_000_000  # a model above this would exhaust a server's memory: refused by check() and build()
MAX_IMAGE_SIDE = 100_000  # channels, height and width of the images
MAX_DEPTH = 1_000  # encoder layers (ViT depth) or hidden layers (mlp depth): more cannot be built in useful time


def _construct_on_meta(name: str, shape: tuple[int, int, int], num_classes: int, full: dict[str, Any]) -> nn.Module:
    """The module with its parameters on the meta device (no memory, no values yet)."""
    with torch.device("meta"):
        if name.startswith("vit-"):
            model: nn.Module = VisionTransformer(
                shape,
                num_classes,
                patch=full["patch"],
                embed_dim=full["embed_dim"],
                depth=full["depth"],
                heads=full["heads"],
                mlp_dim=full.get("mlp_dim"),
                shared_qk=name in ("vit-nomlp-wkewq", "vit-nomlp-wkewq-wvwo"),
                value_output=name != "vit-nomlp-wkewq-wvwo",
                pool=full["pool"],
            )
        elif name == "vgg5-max-relu":
            model = VGG5(shape, num_classes, widths=full["widths"], hidden=full["hidden"])
        elif name == "mlp":
            model = MLP(shape, num_classes, width=full["width"], depth=full["depth"])
        else:  # cnn-small
            model = SmallCNN(shape, num_classes, widths=full["widths"])
    return model


def check(name: str, input_shape: Any, num_classes: int, **sizes: Any) -> dict[str, Any]:
    """Validate a model name and sizes for a data shape without building it.

    Returns the full sizes; raises ConfigError naming each bad field, exactly as `build` would.
    """
    _check_name(name)
    _, full = _validate(name, input_shape, num_classes, 0, sizes)  # counts the parameters, too
    return full


def build(name: str, input_shape: Any, num_classes: int, seed: int = 0, **sizes: Any) -> nn.Module:
    """Build model ``name`` with deterministic weights.

    Arguments:
        name: one of :func:`names` ("vit-mlp", "vit-nomlp", "vit-nomlp-wkewq",
            "vit-nomlp-wkewq-wvwo", "vgg5-max-relu", "mlp", "cnn-small").
        input_shape: (channels, height, width) of one image, e.g. (1, 28, 28) or (3, 32, 32).
        num_classes: number of classes (output logits), at least 2.
        seed: non-negative integer; the same seed gives bit-identical initial weights.
        **sizes: optional size overrides; see :func:`defaults` for each model's names and values.
            ViTs: depth, heads, embed_dim, mlp_dim (vit-mlp only), patch, pool ("cls"/"mean").
            vgg5-max-relu: widths (3 ints), hidden. mlp: width, depth. cnn-small: widths (2 ints).

    Returns a float32 ``nn.Module`` on the CPU with attributes ``name``, ``input_shape``,
    ``num_classes`` and ``sizes`` (the full sizes used). Raises :class:`ConfigError` naming each
    bad field (unknown model, bad input shape, embedding not divisible by heads, patch not
    dividing the image, non-positive sizes, unknown size names, a size or depth too large:
    more than MAX_PARAMETERS parameters or MAX_DEPTH layers).
    """
    shape, full = _validate(name, input_shape, num_classes, seed, sizes)
    model = _construct_on_meta(name, shape, num_classes, full)
    model = model.to_empty(device="cpu")
    _initialise(model, seed)
    model.name = name
    model.input_shape = shape
    model.num_classes = num_classes
    model.sizes = full
    return model
