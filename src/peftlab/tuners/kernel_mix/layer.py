"""Kernel-mix layers: wrappers of the attention projections that add per-head and head-shared low-rank terms.

One :class:`KernelMixLayer` wraps one projection and knows which attention *roles* its output holds:

* GPT-2's fused ``c_attn`` holds q, k and v (output slices [q | k | v]); the V update reads the k slice of the
  same output, so no extra work is needed;
* separate projections (Llama ``q_proj/k_proj/v_proj``, BERT ``query/key/value``) hold one role each. The V
  update needs the head's key, so the k wrapper hands its output to the v wrapper through a :class:`KeyStash`
  (both are called with the *same* hidden-states tensor, k first, in transformers 5.x). If the stash does not hold
  the key of this very input (another call order, or k not called), the v wrapper recomputes it with the frozen
  base key projection: one extra (d x n_kv_heads*d_h) matmul, never a wrong key;
* the output projection (role "o") receives the concatenated head outputs a = concat_h a^h and adds the
  per-head and shared O terms to its output (before any dropout / residual / LayerNorm that follows it).

Every update is applied at the projection, i.e. before keys and values enter a KV cache, so cached generation
equals uncached generation. Per-adapter parameters live in one small module per role (``kmix_q``, ``kmix_k``,
``kmix_v``, ``kmix_o``), saved as e.g. ``...attn.c_attn.kmix_q.head_A``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ...layout import AttentionShape
from ..base import AdapterLayer
from ..dropout import Dropout
from ..targets import projection_shape

_DOWN_NAMES = ("head_A", "shared_down")  # "A"-like parameters: random in both init schemes


def _fmod_normal(shape: torch.Size, std: float, device: torch.device) -> torch.Tensor:
    """The authors' "Houlsby" init: a normal folded into (-2, 2) standard deviations."""
    return torch.fmod(torch.randn(shape, device=device), 2) * std


def block_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """(H, a, b) per-head matrices -> the (H*a, H*b) block-diagonal matrix, so that every head's product is one
    matrix product of the flattened heads (one GEMM instead of a per-head einsum with its permuted copies; the zero
    blocks add exact zeros)."""
    return torch.block_diag(*blocks.unbind(0))


class KernelMixPart(nn.Module):
    """Parameters of one adapter for one role (fp32). Subclasses define shapes and the update."""

    def __init__(self, scaling: float, bandwidth: str) -> None:
        super().__init__()
        self.scaling = scaling
        self.bandwidth_kind = bandwidth

    def _param(self, name: str, *shape: int, device: torch.device) -> None:
        self.register_parameter(name, nn.Parameter(torch.empty(*shape, device=device, dtype=torch.float32)))

    def reset(self, scheme: str, std: float, init_weights: bool) -> None:
        """Initialise every parameter (see KernelMixConfig.init_scheme / init_weights)."""
        with torch.no_grad():
            for name, param in self.named_parameters(recurse=False):
                if name == "bandwidth":
                    param.fill_(1.0 if self.bandwidth_kind == "kernel" else 0.0)  # neutral: identity
                    if not init_weights:
                        param.add_(_fmod_normal(param.shape, 0.1, param.device))
                elif not init_weights:
                    param.copy_(_fmod_normal(param.shape, 0.1, param.device))
                elif scheme == "houlsby":
                    param.copy_(_fmod_normal(param.shape, std, param.device))
                elif name in _DOWN_NAMES:  # "he": kaiming-uniform(a=sqrt(5)) over the last (input) axis
                    bound = 1.0 / math.sqrt(param.shape[-1])
                    param.uniform_(-bound, bound)
                else:  # "he": B's and biases zero -> exact identity
                    param.zero_()

    def apply_bandwidth(self, t: torch.Tensor, n_heads: int) -> torch.Tensor:
        """q^h * b (kernel) or q^h + b (bitfit) per head; ``t``: (..., n_heads*d_h)."""
        if self.bandwidth_kind == "none":
            return t
        b = self.bandwidth.to(t.dtype)  # (n_heads or 1, d_h)
        heads = t.unflatten(-1, (n_heads, b.shape[-1]))  # (..., n_heads, d_h)
        heads = heads * b if self.bandwidth_kind == "kernel" else heads + b
        return heads.flatten(-2)


class QPart(KernelMixPart):
    """q^h += B_q^h A_q^h x + b_q^h + [U_q V_q x]_h; then the optional bandwidth on q."""

    def __init__(self, d_in: int, shape: AttentionShape, r: int, s: int, bias: bool, scaling: float,
                 bandwidth: str, per_head_bandwidth: bool, device: torch.device) -> None:
        super().__init__(scaling, bandwidth)
        H, dh = shape.n_heads, shape.head_dim
        self.n_heads, self.r, self.s = H, r, s
        if r:
            self._param("head_A", H, r, d_in, device=device)
            self._param("head_B", H, dh, r, device=device)
            if bias:
                self._param("head_bias", H, dh, device=device)
        if s:
            self._param("shared_down", s, d_in, device=device)
            self._param("shared_up", H * dh, s, device=device)
        if bandwidth != "none":
            self._param("bandwidth", H if per_head_bandwidth else 1, dh, device=device)

    def forward(self, q: torch.Tensor, xd: torch.Tensor | None) -> torch.Tensor:
        """q: (..., H*d_h) base queries; xd: (..., d) dropped-out layer input in fp32 (None when r = s = 0)."""
        delta = None
        if self.r:
            low = xd @ self.head_A.flatten(0, 1).T  # (..., H*r_q): every head's A in one product
            delta = low @ block_diagonal(self.head_B.transpose(1, 2))  # (..., H*d_h): B^h on head h's r_q only
            if hasattr(self, "head_bias"):
                delta = delta + self.head_bias.flatten()
        if self.s:
            shared = (xd @ self.shared_down.T) @ self.shared_up.T  # (..., s_q) -> (..., H*d_h)
            delta = shared if delta is None else delta + shared
        if delta is not None:
            q = q + (delta * self.scaling).to(q.dtype)
        return self.apply_bandwidth(q, self.n_heads)


class KPart(KernelMixPart):
    """Keys are not adapted by Kernel-mix; this holds only the optional bandwidth (and marks the k wrapper)."""

    def __init__(self, shape: AttentionShape, bandwidth: str, per_head_bandwidth: bool,
                 device: torch.device) -> None:
        super().__init__(1.0, bandwidth)
        self.n_heads = shape.n_kv_heads
        if bandwidth != "none":
            self._param("bandwidth", shape.n_kv_heads if per_head_bandwidth else 1, shape.head_dim, device=device)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        return self.apply_bandwidth(k, self.n_heads)


class VPart(KernelMixPart):
    """v^h += B_v^h A_v^h k^h + b_v^h + [U_v V_v x]_h, one (A, B, b) per key/value head (GQA: n_kv_heads)."""

    def __init__(self, d_in: int, shape: AttentionShape, r: int, s: int, bias: bool, scaling: float,
                 device: torch.device) -> None:
        super().__init__(scaling, "none")
        Hkv, dh = shape.n_kv_heads, shape.head_dim
        self.n_heads, self.head_dim, self.r, self.s = Hkv, dh, r, s
        if r:
            self._param("head_A", Hkv, r, dh, device=device)
            self._param("head_B", Hkv, dh, r, device=device)
            if bias:
                self._param("head_bias", Hkv, dh, device=device)
        if s:
            self._param("shared_down", s, d_in, device=device)
            self._param("shared_up", Hkv * dh, s, device=device)

    def forward(self, v: torch.Tensor, xd: torch.Tensor, kd: torch.Tensor | None) -> torch.Tensor:
        """v: (..., Hkv*d_h) base values; xd: (..., d) dropped-out input; kd: (..., Hkv*d_h) dropped-out keys."""
        delta = None
        if self.r:
            low = kd @ block_diagonal(self.head_A).T  # (..., Hkv*r_v): A^h reads head h's key only
            delta = low @ block_diagonal(self.head_B.transpose(1, 2))  # (..., Hkv*d_h)
            if hasattr(self, "head_bias"):
                delta = delta + self.head_bias.flatten()
        if self.s:
            shared = (xd @ self.shared_down.T) @ self.shared_up.T  # (..., Hkv*d_h)
            delta = shared if delta is None else delta + shared
        if delta is None:
            return v
        return v + (delta * self.scaling).to(v.dtype)


class OPart(KernelMixPart):
    """o += B_O concat_h(A_o^h a^h) + b_O + U_o V_o a, on the output projection's output."""

    def __init__(self, d_out: int, shape: AttentionShape, r: int, s: int, bias: bool, scaling: float,
                 device: torch.device) -> None:
        super().__init__(scaling, "none")
        H, dh = shape.n_heads, shape.head_dim
        self.n_heads, self.head_dim, self.r, self.s = H, dh, r, s
        if r:
            self._param("head_A", H, r, dh, device=device)
            self._param("head_B", d_out, H * r, device=device)
            if bias:
                self._param("head_bias", d_out, device=device)
        if s:
            self._param("shared_down", s, H * dh, device=device)
            self._param("shared_up", d_out, s, device=device)

    def forward(self, out: torch.Tensor, ad: torch.Tensor) -> torch.Tensor:
        """out: (..., d) base projection output; ad: (..., H*d_h) dropped-out attention output in fp32."""
        delta = None
        if self.r:
            low = ad @ block_diagonal(self.head_A).T  # (..., H*r_o): A_o^h reads head h's output only
            delta = low @ self.head_B.T  # (..., d)
            if hasattr(self, "head_bias"):
                delta = delta + self.head_bias
        if self.s:
            shared = (ad @ self.shared_down.T) @ self.shared_up.T  # (..., d)
            delta = shared if delta is None else delta + shared
        if delta is None:
            return out
        return out + (delta * self.scaling).to(out.dtype)


class KeyStash:
    """Hands a separate key projection's output to the value projection's wrapper within one forward pass.

    Plain Python (not a module), shared by the k and v wrappers of one block. ``take`` returns the stashed key only
    for the very tensor it was computed from, else recomputes it with the frozen base key projection.
    """

    def __init__(self, key_module: nn.Module) -> None:
        self.key_module = key_module
        self._input: torch.Tensor | None = None
        self._key: torch.Tensor | None = None
        self.recomputed = 0  # how often the fallback ran (tests/diagnostics)

    def put(self, x: torch.Tensor, key: torch.Tensor) -> None:
        self._input, self._key = x, key

    def take(self, x: torch.Tensor) -> torch.Tensor:
        key = self._key if self._input is x else None
        self._input = self._key = None  # never keep activations alive longer than one v call
        if key is None:
            self.recomputed += 1
            key = self.key_module(x)
        return key


class KernelMixLayer(AdapterLayer):
    """A q/k/v projection (or the fused qkv) or the output projection, plus Kernel-mix parts per adapter."""

    adapter_containers = ("kmix_q", "kmix_k", "kmix_v", "kmix_o")

    def __init__(self, base_layer: nn.Module, roles: dict[str, slice | None]) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = projection_shape(base_layer)
        self.roles = dict(sorted(roles.items(), key=lambda kv: (kv[1] or slice(0, 0)).start))
        self.kmix_q = nn.ModuleDict()
        self.kmix_k = nn.ModuleDict()
        self.kmix_v = nn.ModuleDict()
        self.kmix_o = nn.ModuleDict()
        self.kmix_dropout = nn.ModuleDict()  # per adapter; no parameters
        self.key_stash: KeyStash | None = None  # on a separate k projection that feeds a v wrapper
        self.key_source: KeyStash | None = None  # on a separate v projection

    def role_width(self, role: str) -> int:
        sl = self.roles[role]
        return self.out_features if sl is None else sl.stop - sl.start

    def add_part(self, role: str, name: str, part: KernelMixPart, dropout: float, trainable: bool) -> None:
        part.train(self.training)  # a model already in eval mode gets an eval-mode adapter
        getattr(self, f"kmix_{role}")[name] = self.place_adapter(part, trainable)
        if name not in self.kmix_dropout:
            drop = Dropout(dropout) if dropout > 0 else nn.Identity()
            self.kmix_dropout[name] = drop.train(self.training)

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        if name in self.kmix_dropout:
            del self.kmix_dropout[name]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        if not self.uses_adapter():
            return out
        if "o" in self.roles:
            for name in self.active_adapters:
                if name in self.kmix_o:
                    part = self.kmix_o[name]
                    out = part(out, self.kmix_dropout[name](x.to(torch.float32)))
            return out
        pieces = {role: (out if sl is None else out[..., sl]) for role, sl in self.roles.items()}
        base_key = pieces.get("k")
        if self.key_stash is not None:
            self.key_stash.put(x, base_key)
        key = base_key
        for name in self.active_adapters:
            drop = self.kmix_dropout[name]
            q_part = self.kmix_q[name] if "q" in pieces and name in self.kmix_q else None
            reads_x = (q_part is not None and (q_part.r or q_part.s)) or (
                "v" in pieces and name in self.kmix_v and self.kmix_v[name].s)
            xd = drop(x.to(torch.float32)) if reads_x else None  # one mask for every term reading x here
            if q_part is not None:
                pieces["q"] = q_part(pieces["q"], xd)
            if "v" in pieces and name in self.kmix_v:
                part = self.kmix_v[name]
                if part.r and key is None:
                    key = self.key_source.take(x)  # separate k projection: the key of this same input
                pieces["v"] = part(pieces["v"], xd, drop(key.to(torch.float32)) if part.r else None)
            if "k" in pieces and name in self.kmix_k:
                pieces["k"] = self.kmix_k[name](pieces["k"])
        return self._assemble(out, pieces)

    def _assemble(self, out: torch.Tensor, pieces: dict[str, torch.Tensor]) -> torch.Tensor:
        """Put the (possibly updated) role slices back together in output order, keeping unclaimed columns."""
        if len(pieces) == 1 and next(iter(self.roles.values())) is None:
            return next(iter(pieces.values()))
        chunks, cursor = [], 0
        for role, sl in self.roles.items():
            if sl.start > cursor:
                chunks.append(out[..., cursor:sl.start])
            chunks.append(pieces[role])
            cursor = sl.stop
        if cursor < self.out_features:
            chunks.append(out[..., cursor:])
        return torch.cat(chunks, dim=-1)
