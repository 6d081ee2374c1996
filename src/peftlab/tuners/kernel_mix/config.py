"""Kernel-mix config (Chen et al., Findings of NAACL 2022): per-head ("kernel-wise") low-rank updates.

Field names follow the method's math (methods.md §3.3): ``r_q``/``r_v`` are the per-head ranks, ``s_q``/``s_v`` the
ranks of the head-shared updates. The authors' code names them ``lora_Q_rank``, ``lora_V_rank``,
``lora_Q_share_rank`` and ``lora_V_share_rank``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ...config import PeftConfig
from ...errors import ConfigError
from ...layout import AttentionShape

PRESETS: dict[str, dict[str, Any]] = {
    # nlg/configs/kernel-mix.json (GPT-2 small): lora="QVO", lora_head=true, lora_head_base="XKA"
    "kernel-mix-nlg": dict(r_q=3, r_v=8, s_q=12, s_v=8, dropout=0.1, init_scheme="houlsby"),
    # nlu/scripts/run_glue.sh (RoBERTa-base)
    "kernel-mix-nlu": dict(r_q=1, r_v=2, s_q=2, s_v=4, dropout=0.1, init_scheme="houlsby"),
    # parameter-matched to LoRA r=4 q,v / r=8 q,v (ours, not the authors'): per-head Q and V updates only, no
    # head-shared terms and no O terms (B_O, d x H*r_o, dominates the authors' counts).
    # SmolLM2-135M: 218,880 (0.95x LoRA r=4 q,v's 230,400); MiniLM-L6: 43,776
    "kernel-mix-qv-r1v2": dict(r_q=1, r_v=2, s_q=0, s_v=0, r_o=0, s_o=0, dropout=0.1, init_scheme="houlsby"),
    # MiniLM-L6: 73,728 (1.00x LoRA r=8 q,v's 73,728)
    "kernel-mix-qv-r2v2": dict(r_q=2, r_v=2, s_q=0, s_v=0, r_o=0, s_o=0, dropout=0.1, init_scheme="houlsby"),
}


@dataclass
class KernelMixConfig(PeftConfig):
    """Kernel-mix: each attention head gets its own low-rank update of Q (from the layer input), of V (from that
    head's key) and of its share of the output projection, each mixed with a head-shared low-rank update."""

    peft_type: ClassVar[str] = "KERNEL_MIX"

    r_q: int = 3
    """Per-head rank of the Q update: q^h += B_q^h A_q^h x + b_q^h with A_q^h r_q x d, B_q^h d_h x r_q. 0 turns the
    per-head Q term (and its bias) off. At most the head dimension d_h. Default: the NLG config (kernel-mix.json)."""
    r_v: int = 8
    """Per-head rank of the V update, whose input is the same head's key: v^h += B_v^h A_v^h k^h + b_v^h with
    A_v^h r_v x d_h. 0 turns it off. At most d_h. With grouped-query attention these are per key/value head."""
    s_q: int = 12
    """Rank of the head-shared Q update U_q V_q x (no bias); 0 turns it off."""
    s_v: int = 8
    """Rank of the head-shared V update U_v V_v x (input: the layer input, not the key); 0 turns it off."""
    r_o: int | None = None
    """Per-head rank of the output-projection update B_O concat_h(A_o^h a^h) + b_O. None: r_v, as in the authors'
    code (which reuses lora_V_rank). 0 drops the O-head term, whose B_O (d x H*r_o) dominates the count."""
    s_o: int | None = None
    """Rank of the head-shared output update U_o V_o a (no bias). None: s_v, as in the authors' code."""
    head_bias: bool = True
    """Per-head biases b_q^h, b_v^h and the output bias b_O of the per-head terms (the code has them; they are
    part of the published parameter formula)."""
    dropout: float = 0.1
    """Dropout on every adapter input (x for Q and the shared V term, the key for the V-head term, the attention
    output for the O terms). 0.1 in both of the authors' configs."""
    scaling: float = 1.0
    """Multiplier of every low-rank term. The code's effective scaling is 1 (lora_alpha=1 is never applied)."""
    init_scheme: Literal["houlsby", "he"] = "houlsby"
    """"houlsby" (the code's Kernel-mix default): every A, B and bias is torch.fmod(randn, 2) * init_std, so the
    model is slightly perturbed at step 0. "he": A kaiming-uniform, B and biases zero: exact identity at init."""
    init_std: float = 0.01
    """Standard deviation of the "houlsby" folded truncated normal."""
    init_weights: bool = True
    """True: initialise as init_scheme says. False: every parameter (B's, biases and bandwidths included) random
    with std 0.1, a visibly non-identity adapter (tests)."""
    bandwidth: Literal["none", "kernel", "bitfit"] = "none"
    """The code's KernelAdapter "bandwidth" variants on queries and keys, applied at the projection outputs:
    "kernel": q^h <- q^h * b_q, k^h <- k^h * b_k (init ones); "bitfit": q^h <- q^h + b_q, k^h <- k^h + b_k (init
    zeros). Off in the Kernel-mix configs. With rotary embeddings (Llama) they act before the rotation."""
    bandwidth_per_head: bool = False
    """Bandwidth vectors per head (H x d_h for queries, n_kv_heads x d_h for keys) instead of one d_h vector shared
    by every head."""
    layers_to_transform: list[int] | None = None
    """Only adapt these block indices (default: all blocks)."""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "KernelMixConfig":
        """A config from a named preset: the authors' "kernel-mix-nlg" (r_q=3, r_v=8, s_q=12, s_v=8) and
        "kernel-mix-nlu" (r_q=1, r_v=2, s_q=2, s_v=4), or our LoRA-matched "kernel-mix-qv-r1v2" /
        "kernel-mix-qv-r2v2" (per-head Q/V only); keyword arguments override single fields."""
        if name not in PRESETS:
            raise ConfigError(f"KernelMixConfig.preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"KernelMixConfig.preset: unknown fields {unknown}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def rank_o(self) -> int:
        return self.r_v if self.r_o is None else self.r_o

    @property
    def share_o(self) -> int:
        return self.s_v if self.s_o is None else self.s_o

    def validate(self) -> None:
        for name in ("r_q", "r_v", "s_q", "s_v", "r_o", "s_o"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"KernelMixConfig.{name}: a rank must be >= 0 (0 turns the term off), got {value}")
        if not (self.r_q or self.r_v or self.s_q or self.s_v or self.rank_o or self.share_o) \
                and self.bandwidth == "none":
            raise ConfigError("KernelMixConfig: every rank (r_q, r_v, s_q, s_v, r_o, s_o) is 0 and bandwidth is "
                              "'none': the adapter would have no parameters")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"KernelMixConfig.dropout: expected a probability in [0, 1), got {self.dropout}")
        if not self.init_std > 0:
            raise ConfigError(f"KernelMixConfig.init_std: expected a positive number, got {self.init_std}")

    def check_shape(self, shape: AttentionShape) -> None:
        """Rank limits for one model's head geometry (ConfigError naming the field and the allowed range)."""
        d, dh = shape.hidden_size, shape.head_dim
        limits = {
            "r_q": (self.r_q, dh, "a head's query dimension d_h"),
            "r_v": (self.r_v, dh, "a head's key/value dimension d_h"),
            "r_o": (self.rank_o, dh, "a head's attention-output dimension d_h"),
            "s_q": (self.s_q, min(d, shape.q_size), "min(hidden size, H*d_h)"),
            "s_v": (self.s_v, min(d, shape.kv_size), "min(hidden size, n_kv_heads*d_h)"),
            "s_o": (self.share_o, min(d, shape.q_size), "min(hidden size, H*d_h)"),
        }
        for name, (value, limit, what) in limits.items():
            if value > limit:
                source = "" if getattr(self, name) is not None else " (inherited from r_v/s_v)"
                raise ConfigError(f"KernelMixConfig.{name}: {value}{source} is larger than {what} = {limit} of this "
                                  f"model (H={shape.n_heads}, n_kv_heads={shape.n_kv_heads}, d_h={dh}, d={d}); "
                                  f"allowed range 0..{limit}")


def kernel_mix_parameter_count(config: KernelMixConfig, shape: AttentionShape, n_layers: int) -> int:
    """Trainable parameters of ``config`` on ``n_layers`` blocks of head geometry ``shape`` (methods.md §3.3,
    generalised to grouped-query attention: V terms per key/value head, Q and O terms per query head).

    With H = n_kv_heads and d = H*d_h this is the spec's per-layer formula
    r_q*H*(d+d_h) + d + 2*d*s_q + 2*d*r_v + d + 2*d*s_v + d*r_v*(1+H) + d + 2*d*s_v.
    """
    d, dh, H, Hkv = shape.hidden_size, shape.head_dim, shape.n_heads, shape.n_kv_heads
    bias = 1 if config.head_bias else 0
    per = 0
    if config.r_q:
        per += H * config.r_q * d + H * dh * config.r_q + bias * H * dh  # A_q (H,r,d), B_q (H,dh,r), b_q (H,dh)
    per += config.s_q * (d + H * dh)  # V_q (s,d), U_q (H*dh,s)
    if config.r_v:
        per += 2 * Hkv * config.r_v * dh + bias * Hkv * dh  # A_v (Hkv,r,dh), B_v (Hkv,dh,r), b_v (Hkv,dh)
    per += config.s_v * (d + Hkv * dh)  # V_v (s,d), U_v (Hkv*dh,s)
    if config.rank_o:
        per += H * config.rank_o * dh + d * H * config.rank_o + bias * d  # A_o (H,r,dh), B_O (d,H*r), b_O (d)
    per += config.share_o * (H * dh + d)  # V_o (s,H*dh), U_o (d,s)
    if config.bandwidth != "none":
        per += (H + Hkv) * dh if config.bandwidth_per_head else 2 * dh
    return n_layers * per
