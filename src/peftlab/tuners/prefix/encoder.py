"""Reparameterizations (small networks whose output is every layer's prefix, used while training) and gates.

Every encoder produces, per prefix token j, one vector p_j of width D = 2 * L * d_kv (d_kv = n_kv_heads * head_dim,
= d without grouped-query attention), laid out as Li & Liang / peft do: p_j.view(L, 2, n_kv_heads, head_dim) is
(layer, key|value, head, dim). After training only p (the "ejected" prefix, 2 * L * d_kv * l numbers) is needed.

=====  ============================================================  =====================================
name   p_j                                                           trainable parameters
=====  ============================================================  =====================================
mlp    W2 tanh(W1 e_j + b1) + b2, e_j in R^d    (Li & Liang)         l d + (d m + m) + (m D + D)
R-a    e_j + LN(W2 act(W1 e_j + b1) + b2), e_j in R^D                l D + (D m + m) + (m D + D) + 2 D
R-b    mlp(e_j) + D_j, D_j in R^D a directly trained term            mlp + l D
R-c    per layer: e_j^i + LN(W2 act(W1 e_j^i + b1) + b2), e^i in     L l 2d_kv + (2d_kv m + m) + (m 2d_kv +
       R^{2 d_kv}, one MLP shared by all layers                      2d_kv) + 2 (2d_kv)
R-d    W2 (e_j + tanh(W1 e_j + b1)) + b2, e_j in R^d, m = d          l d + (d d + d) + (d D + D)
=====  ============================================================  =====================================

(LN terms only with ``layer_norm``.) ``layer_kv(i)`` computes one layer's slice and is what training uses, so each
decoder block recomputes its own part inside its (possibly checkpointed) forward; without autograd the whole
prefix is computed once and cached until a parameter changes.

R-a has no per-layer shortcut (its LayerNorm spans every layer), so its slice would cost the whole network per layer;
the sliced output layers of mlp, R-b and R-d are cheap forward, but each block's backward writes a zero-filled
gradient of the whole output weight (m x 2 L d_kv) before the sum. These encoders compute the prefix once per
forward pass instead (``per_pass``; R-c's per-layer slice is one layer's work, so it keeps it): the model body's
pre-hook (``PrefixPassHook``) calls :meth:`PrefixEncoder.begin_pass` before the first block, outside every
checkpointed region, and each block slices that one tensor. Non-reentrant checkpointing recomputes a block from the same tensor (its parameters have not
changed); reentrant checkpointing runs the blocks without autograd, which the encoder notices and then falls back to
one fresh computation per block in the backward pass (``benchmarks/bench_methods.py`` measures the step).

Gates, per layer and token (spec section 4.2, all [RECON]):

* G-a: g = f(w), w in R^l per layer (zero at init); f set by ``gate_init``: "one" 2 sigmoid(w) (g = 1 at init),
  "half" sigmoid(w) (g = 0.5), "zero" tanh(w) (g = 0, only with the separate prefix term).
* G-b: g = l softmax(w), "balanced": the gates of one layer sum to l; uniform 1 at init.
* G-c: content gate g_j = f(u^T [K_j; V_j] + c) from the layer's own prefix token j (u in R^{2 d_kv}, c scalar),
  u = 0, c = 0 at init, f as for G-a.

A gate has L * l parameters (G-a, G-b) or L * (2 d_kv + 1) (G-c); each block.s prefix layer holds its own gate module.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import PrefixSpec

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _in_backward() -> bool:
    """Whether autograd's engine is running (checkpointing recomputes blocks there, after the body's forward)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


class _PassSlot:
    """Holds a pass's prefix, which carries its autograd graph: copies and pickles of the encoder start empty."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: tuple[tuple, torch.Tensor] | None = None

    def __deepcopy__(self, memo: dict) -> "_PassSlot":
        return _PassSlot()

    def __reduce__(self):
        return (_PassSlot, ())


class PrefixEncoder(nn.Module):
    """Base class: subclasses implement :meth:`full` and may implement a cheaper :meth:`layer_flat`."""

    per_pass = True
    """True: a training forward pass computes the whole prefix once and every block slices it (see the module
    docstring); False: each block computes its own slice with :meth:`layer_flat`."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, length: int) -> None:
        super().__init__()
        self.n_layers, self.n_kv_heads, self.head_dim, self.length = n_layers, n_kv_heads, head_dim, length
        self.layer_width = 2 * n_kv_heads * head_dim  # key and value of one layer
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self._pass = _PassSlot()  # (parameter state, full prefix) of the latest pass
        self._pass_open = False

    def _parameter_state(self) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def begin_pass(self) -> None:
        """A forward pass of the model body starts: with autograd on, compute every layer's prefix once for it."""
        self._pass_open = True
        self._pass.value = (self._parameter_state(), self.full()) if torch.is_grad_enabled() else None

    def end_pass(self) -> None:
        """The body's forward ended. The pass's prefix stays for non-reentrant checkpointing's recomputation in the
        backward pass; the next pass replaces it."""
        self._pass_open = False

    def _grad_layer_flat(self, index: int) -> torch.Tensor:
        found = self._pass.value
        if found is not None and (self._pass_open or _in_backward()) and found[0] == self._parameter_state():
            return found[1][:, index * self.layer_width:(index + 1) * self.layer_width]
        return self.layer_flat(index)

    def full(self) -> torch.Tensor:
        """Every layer's prefix, (l, L * 2 * d_kv)."""
        raise NotImplementedError

    def layer_flat(self, index: int) -> torch.Tensor:
        """Layer ``index``'s prefix, (l, 2 * d_kv)."""
        return self.full()[:, index * self.layer_width:(index + 1) * self.layer_width]

    def _cached_full(self) -> torch.Tensor:
        state = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())
        if self._cache is None or self._cache[0] != state:
            self._cache = (state, self.full().detach())
        return self._cache[1]

    def layer_kv(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s prefix keys and values, each (n_kv_heads, l, head_dim)."""
        if torch.is_grad_enabled():
            flat = self._grad_layer_flat(index) if self.per_pass else self.layer_flat(index)
        else:  # inference: one pass for all layers and all decoding steps, until a parameter changes
            if self._pass_open and self._pass.value is not None:  # a block without autograd in a pass with it:
                self._pass.value = None  # reentrant checkpointing, whose backward recomputes each block on its own
            flat = self._cached_full()[:, index * self.layer_width:(index + 1) * self.layer_width]
        kv = flat.reshape(self.length, 2, self.n_kv_heads, self.head_dim).permute(1, 2, 0, 3)  # (2, KV, l, hd)
        return kv[0], kv[1]

    def stacked(self) -> torch.Tensor:
        """The ejected prefix, (L, 2, n_kv_heads, l, head_dim)."""
        flat = self.full().reshape(self.length, self.n_layers, 2, self.n_kv_heads, self.head_dim)
        return flat.permute(1, 2, 3, 0, 4)


def _sliced_linear(linear: nn.Linear, rows: slice, x: torch.Tensor) -> torch.Tensor:
    """The output columns ``rows`` of ``linear(x)`` without computing the others."""
    bias = linear.bias[rows] if linear.bias is not None else None
    return F.linear(x, linear.weight[rows], bias)


class LiLiangMLP(PrefixEncoder):
    """``mlp``: embedding (l, d) -> Linear(d, m) -> tanh -> Linear(m, D) (Li & Liang's ``get_prompt_p5``)."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, length: int, d_model: int, hidden: int,
                 direct_term: bool = False, direct_init: str = "zeros") -> None:
        super().__init__(n_layers, n_kv_heads, head_dim, length)
        width = n_layers * self.layer_width
        self.embedding = nn.Parameter(torch.randn(length, d_model))  # nn.Embedding's N(0, 1), as Li & Liang/peft
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, width))
        self.direct = None
        if direct_term:  # R-b: a directly trained term added to the MLP output
            init = torch.zeros(length, width) if direct_init == "zeros" else torch.randn(length, width) * 0.02
            self.direct = nn.Parameter(init)

    def full(self) -> torch.Tensor:
        out = self.mlp(self.embedding)
        return out + self.direct if self.direct is not None else out

    def layer_flat(self, index: int) -> torch.Tensor:
        rows = slice(index * self.layer_width, (index + 1) * self.layer_width)
        hidden = torch.tanh(self.mlp[0](self.embedding))  # (l, m): cheap, recomputed per layer
        out = _sliced_linear(self.mlp[2], rows, hidden)
        return out + self.direct[:, rows] if self.direct is not None else out


class ResidualMLP(nn.Module):
    """Residual Prompt Tuning's ResMLP: x + LN(W2 act(W1 x + b1) + b2) (LN optional)."""

    def __init__(self, width: int, hidden: int, activation: str, layer_norm: bool, gain: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(width, hidden), _ACTIVATIONS[activation](), nn.Linear(hidden, width)]
        if layer_norm:
            norm = nn.LayerNorm(width)
            with torch.no_grad():
                norm.weight.fill_(gain)  # the branch's per-coordinate rms at init
            layers.append(norm)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class FullResidual(PrefixEncoder):
    """R-a: a free vector e_j in R^D per token plus a full-width residual MLP (Residual Prompt Tuning style)."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, length: int, hidden: int, activation: str,
                 layer_norm: bool, gain: float = 1.0, embedding_std: float = 0.02) -> None:
        super().__init__(n_layers, n_kv_heads, head_dim, length)
        width = n_layers * self.layer_width
        self.embedding = nn.Parameter(torch.randn(length, width) * embedding_std)
        self.residual = ResidualMLP(width, hidden, activation, layer_norm, gain)

    def full(self) -> torch.Tensor:
        return self.residual(self.embedding)  # the LayerNorm spans all layers: no per-layer shortcut


class PerLayerResidual(PrefixEncoder):
    """R-c: per-layer free vectors e^i in R^{l x 2 d_kv} through one residual MLP shared by all layers."""

    per_pass = False  # a layer's slice is that layer's own work

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, length: int, hidden: int, activation: str,
                 layer_norm: bool, gain: float = 1.0, embedding_std: float = 0.02) -> None:
        super().__init__(n_layers, n_kv_heads, head_dim, length)
        self.embedding = nn.Parameter(torch.randn(n_layers, length, self.layer_width) * embedding_std)
        self.residual = ResidualMLP(self.layer_width, hidden, activation, layer_norm, gain)

    def full(self) -> torch.Tensor:
        out = self.residual(self.embedding)  # (L, l, 2 d_kv)
        return out.permute(1, 0, 2).reshape(self.length, -1)  # (l, L * 2 d_kv), layer-major per token

    def layer_flat(self, index: int) -> torch.Tensor:
        return self.residual(self.embedding[index])


class InnerResidual(PrefixEncoder):
    """R-d: the residual inside Li & Liang's MLP, W2 (e_j + tanh(W1 e_j + b1)) + b2, with m = d."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, length: int, d_model: int) -> None:
        super().__init__(n_layers, n_kv_heads, head_dim, length)
        self.embedding = nn.Parameter(torch.randn(length, d_model))
        self.inner = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, n_layers * self.layer_width)

    def _hidden(self) -> torch.Tensor:
        return self.embedding + torch.tanh(self.inner(self.embedding))

    def full(self) -> torch.Tensor:
        return self.out(self._hidden())

    def layer_flat(self, index: int) -> torch.Tensor:
        return _sliced_linear(self.out, slice(index * self.layer_width, (index + 1) * self.layer_width),
                              self._hidden())


def build_encoder(spec: PrefixSpec, n_layers: int, n_kv_heads: int, head_dim: int, d_model: int) -> PrefixEncoder:
    """The reparameterization ``spec`` asks for (not for ``direct``, which has no encoder)."""
    l, m = spec.num_virtual_tokens, spec.hidden
    kind = spec.reparameterization
    if kind in ("mlp", "R-b"):
        return LiLiangMLP(n_layers, n_kv_heads, head_dim, l, d_model, m, direct_term=kind == "R-b",
                          direct_init=spec.direct_init)
    if kind == "R-a":
        return FullResidual(n_layers, n_kv_heads, head_dim, l, m, spec.activation, spec.layer_norm,
                            spec.layer_norm_gain, spec.embedding_std)
    if kind == "R-c":
        return PerLayerResidual(n_layers, n_kv_heads, head_dim, l, m, spec.activation, spec.layer_norm,
                                spec.layer_norm_gain, spec.embedding_std)
    if kind == "R-d":
        return InnerResidual(n_layers, n_kv_heads, head_dim, l, d_model)
    raise ValueError(f"no encoder for reparameterization {kind!r}")


# --- gates -------------------------------------------------------------------------------------------------------
def _squash(z: torch.Tensor, gate_init: str) -> torch.Tensor:
    if gate_init == "one":
        return 2.0 * torch.sigmoid(z)
    if gate_init == "half":
        return torch.sigmoid(z)
    return torch.tanh(z)  # "zero"


class TokenGate(nn.Module):
    """G-a / G-b: one free logit per prefix token of this layer."""

    def __init__(self, length: int, variant: str, gate_init: str, init_weights: bool) -> None:
        super().__init__()
        self.variant, self.gate_init = variant, gate_init
        self.logit = nn.Parameter(torch.zeros(length) if init_weights else torch.randn(length))

    def forward(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Gate values (l,); ``key``/``value`` (KV, l, hd) are unused (the signature is shared with G-c)."""
        if self.variant == "G-b":
            return self.logit.numel() * torch.softmax(self.logit, dim=-1)
        return _squash(self.logit, self.gate_init)


class ContentGate(nn.Module):
    """G-c: g_j = f(u^T [K_j; V_j] + c), computed from the layer's ungated prefix token j."""

    def __init__(self, kv_width: int, gate_init: str, init_weights: bool) -> None:
        super().__init__()
        self.gate_init = gate_init
        self.proj = nn.Linear(2 * kv_width, 1)
        with torch.no_grad():
            if init_weights:
                self.proj.weight.zero_()
                self.proj.bias.zero_()
            else:
                self.proj.weight.normal_(std=1.0 / (2 * kv_width) ** 0.5)
                self.proj.bias.normal_()

    def forward(self, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        length = key.shape[1]
        tokens = torch.cat([key.transpose(0, 1).reshape(length, -1),  # (KV, l, hd) -> (l, KV * hd)
                            value.transpose(0, 1).reshape(length, -1)], dim=-1)  # (l, 2 d_kv)
        return _squash(self.proj(tokens.to(self.proj.weight.dtype)).squeeze(-1), self.gate_init)


def build_gate(variant: str, length: int, kv_width: int, gate_init: str, init_weights: bool) -> nn.Module | None:
    """The gate module of one layer, or None for ``variant == "none"``."""
    if variant == "none":
        return None
    if variant in ("G-a", "G-b"):
        return TokenGate(length, variant, gate_init, init_weights)
    if variant == "G-c":
        return ContentGate(kv_width, gate_init, init_weights)
    raise ValueError(f"unknown gate variant {variant!r}")
