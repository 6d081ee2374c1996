"""Solo Connection config (Pathak & Paffenroth 2025, reconstructed: see docs/methods/solo.md).

Long skip connections from the output ``h_i`` of block ``i`` (``i = -1``: the embeddings, i.e. the input of block 0)
to the output of a later block ``j``::

    h_j <- Block_j(h_{j-1}) + sum_{(i, j) in C} t_ij * (B_ij A_ij h_i [+ b_ij])

with ``t_ij`` in [0, 1] the homotopy factor (t = 0: exactly the pretrained model). Only the abstract and one table
of the paper were available, so every unknown (topology, rank, sharing, t schedule, init...) is a field below; the
defaults and their reasons are in each field's docstring and in docs/methods/solo.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from ...config import PeftConfig
from ...errors import ConfigError

_SPAN = re.compile(r"^span(?:-(\d+))?$")
AUTO_FALLBACK_RAMP_STEPS = 500
"""T_h of ramp_steps="auto" when no training loop resolved it (the previous fixed default)."""
TOPOLOGY_NAMES = ("span", "span-<k>", "single", "to-last")
_T_MODE_ALIASES = {"schedule×learned": "schedule*learned", "schedule_x_learned": "schedule*learned",
                   "schedule-learned": "schedule*learned"}


@dataclass
class SoloConnectionConfig(PeftConfig):
    """Solo Connection: trainable (low-rank) long skips between block outputs, scaled by a homotopy t in [0, 1]."""

    peft_type: ClassVar[str] = "SOLO"

    topology: str | list[list[int]] = "span"
    """Which (source i, destination j) pairs get a skip; i = -1 is the embeddings (the input of block 0), j > i.
    "span-<k>": (i, i+k) for every block i with i+k < L; "span" = span-<L//3> (the spec's default k = L/3: 8 on
    GPT-2 M, 4 on GPT-2 S, giving the paper-matching 262,144 / 98,304 parameters at rank 8). "single": one skip
    first block -> last block (the name "Solo" may hint at a single connection). "to-last": every block i < L-1 ->
    last block. Or an explicit list of pairs, e.g. [[-1, 5], [2, 11]]. Default "span": the spec's default topology."""
    include_embeddings: bool = False
    """Generated topologies only: also connect the embeddings (i = -1): span-k adds (-1, k-1), to-last adds (-1, L-1),
    single becomes (-1, L-1). Default False: the paper speaks of links between outputs of decoder blocks, and the
    spec's parameter counts (16 pairs on GPT-2 M span-8) have no embedding pair. Explicit pairs use -1 directly."""
    rank: int | None = 8
    """Rank r of each map W = B A (A: r x d, B: d x r); None = a full d x d matrix. Default 8: the spec's default,
    which reproduces the paper's 0.26M on GPT-2 M with span-8. Must be in [1, hidden_size]."""
    share_maps: bool = False
    """One map (A, B, bias) shared by every pair instead of one per pair. Default False: the spec's parameter formula
    (|C| maps) and the 0.26M count assume one map per pair."""
    bias: bool = False
    """Add a trainable bias b_ij (d values per map) to each map. Default False: the formula's 0.26M has no bias."""
    dropout: float = 0.0
    """Dropout on the source h_i before the map (training only). Default 0.0, as in the spec's pseudocode; the spec
    lists 0.1 (the LoRA E2E recipe's adapter dropout) as the value to try."""
    source_norm: bool = False
    """Apply a parameter-free LayerNorm to h_i before the map (the residual stream grows with depth in pre-LN
    models). Default False: optional in the spec, and block j's own input norm already normalises what it reads."""
    source_after_skips: bool = True
    """True: h_i is block i's output after the skips ending at block i were added (the adapted residual stream that
    block i+1 reads, as in the spec's equation). False: h_i is taken before they are added (what the spec's
    hook-order pseudocode does). Only matters when a block is both a destination and a source (e.g. span-8 on
    GPT-2 M: 0->8 and 8->16)."""
    init_up: Literal["auto", "zeros", "normal"] = "auto"
    """Init of the up-projection B (of W itself when rank=None); A is always kaiming-uniform (LoRA's init).
    "zeros": W = 0. "normal": N(0, init_up_std^2). "auto" (default): "normal" when t is learned and starts at
    exactly 0 (learned_t="clamp" with theta_init <= 0), else "zeros". Reason: with t = 0 and B = 0 both dL/dt
    (proportional to B A h) and dL/dB (proportional to t) vanish, so training never starts (the spec's pitfall);
    that combination with init_up="zeros" is rejected with a ConfigError. The model is still exactly the
    pretrained one at init, because t = 0."""
    init_up_std: float = 1e-3
    """Standard deviation of the "normal" up-projection init. Default 1e-3: the spec suggests 1e-3 to 1e-2 and its
    pseudocode uses 1e-3 (small, so the first steps of a learned t stay close to the pretrained model)."""
    t_mode: Literal["schedule", "learned", "schedule*learned", "constant"] = "schedule"
    """How t is obtained. "schedule" (default, the spec's choice; it matches "gradually interpolates ... over
    time"): t = min(1, step / ramp_steps), step = optimizer steps taken, saved with the adapter (advance it with
    peftlab.tuners.solo.attach_homotopy_schedule or advance_homotopy). "learned": t = g(theta) with trainable
    scalars theta (see learned_t). "schedule*learned" (also "schedule×learned"): the product. "constant":
    t = t_constant."""
    ramp_steps: int | Literal["auto"] = "auto"
    """Schedule length T_h in optimizer steps: optimizer step k (1-based) trains with t = min(1, k / T_h), and after
    s steps the adapter infers with t = min(1, s / T_h). "auto" (default): T_h follows the run, resolved when
    training starts (`peftlab train`, or `resolve_ramp_steps(model, total_steps, warmup_steps)` in your own loop):
    the run's warm-up steps when it has a warm-up (the spec sets T_h to the warm-up), else ramp_fraction of the
    planned steps; never more than the planned steps, so the last step trains and the adapter infers at t = 1.
    An explicit T_h longer than the run ends at t < 1, which training warns about. The saved adapter records the
    resolved number. (Until then "auto" falls back to AUTO_FALLBACK_RAMP_STEPS = 500, with a warning.)"""
    ramp_fraction: float = 0.1
    """ramp_steps="auto" in a run without warm-up: T_h = this fraction of the planned optimizer steps (at least 1)."""
    t_constant: float = 1.0
    """t for t_mode="constant", in (0, 1]. Default 1.0: the "constant 1" ablation of the spec."""
    learned_t: Literal["clamp", "sigmoid"] = "clamp"
    """Parametrisation of a learned t. "clamp" (default): t = clamp(theta, 0, 1) with a straight-through gradient
    (a plain clamp has zero gradient outside [0, 1], so one step below 0 would freeze t at 0 for good); t starts at
    exactly 0, keeping the exact identity at init. "sigmoid": t = sigmoid(theta); never exactly 0."""
    theta_init: float | None = None
    """Initial theta of a learned t. None (default) = the spec's values: 0.0 for "clamp" (t = 0), -6.0 for
    "sigmoid" (t = 0.0025)."""
    share_t: bool = False
    """One learned theta for all pairs instead of one per pair. Default False: per-pair t costs |C| scalars and
    lets each skip open at its own pace."""
    init_weights: bool = True
    """True: the adapter starts as the identity (t = 0, or B = 0 when t starts above 0). False (tests): B ~ N(0,
    0.1^2) and the homotopy starts at its end (schedule step = ramp_steps, learned theta at t = 1), so the adapter
    visibly changes the model."""

    def __post_init__(self) -> None:
        if isinstance(self.t_mode, str):
            self.t_mode = _T_MODE_ALIASES.get(self.t_mode, self.t_mode)  # type: ignore[assignment]
        if isinstance(self.topology, tuple):
            self.topology = list(self.topology)
        super().__post_init__()

    # --- checks ------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        name = type(self).__name__
        if isinstance(self.topology, str):
            match = _SPAN.match(self.topology)
            if not match and self.topology not in ("single", "to-last"):
                raise ConfigError(f"{name}.topology: expected one of {', '.join(TOPOLOGY_NAMES)} or a list of "
                                  f"[i, j] pairs, got {self.topology!r}")
            if match and match.group(1) is not None and int(match.group(1)) < 1:
                raise ConfigError(f"{name}.topology: span-k needs k >= 1, got {self.topology!r}")
        else:
            if not self.topology:
                raise ConfigError(f"{name}.topology: empty list of pairs; give at least one [i, j] pair")
            if self.include_embeddings:
                raise ConfigError(f"{name}.include_embeddings: only applies to generated topologies; with explicit "
                                  "pairs, use i = -1 for the embeddings")
            seen = set()
            for k, pair in enumerate(self.topology):
                if len(pair) != 2:
                    raise ConfigError(f"{name}.topology[{k}]: a pair is [i, j], got {pair!r}")
                i, j = pair
                if i < -1 or j <= i:
                    raise ConfigError(f"{name}.topology[{k}]: pair {pair!r} must satisfy -1 <= i < j (i = -1 is the "
                                      "embeddings; a skip goes from a lower block to a higher one)")
                if (i, j) in seen:
                    raise ConfigError(f"{name}.topology[{k}]: pair {pair!r} is listed twice")
                seen.add((i, j))
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"{name}.rank: must be in [1, hidden_size] (or None for a full map), got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{name}.dropout: expected a probability in [0, 1), got {self.dropout}")
        if self.init_up_std <= 0:
            raise ConfigError(f"{name}.init_up_std: must be > 0, got {self.init_up_std}")
        if self.ramp_steps != "auto" and (isinstance(self.ramp_steps, bool) or not isinstance(self.ramp_steps, int)
                                          or self.ramp_steps < 1):
            raise ConfigError(f"{name}.ramp_steps: must be 'auto' or >= 1 optimizer step, got {self.ramp_steps!r} "
                              "(for t = 1 from the start use t_mode='constant')")
        if not 0.0 < self.ramp_fraction <= 1.0:
            raise ConfigError(f"{name}.ramp_fraction: must be in (0, 1], got {self.ramp_fraction}")
        if not 0.0 < self.t_constant <= 1.0:
            raise ConfigError(f"{name}.t_constant: must be in (0, 1], got {self.t_constant} "
                              "(t = 0 would make the adapter a no-op that never receives a gradient)")
        if self.init_up == "zeros" and self.learned_t_starts_at_zero():
            raise ConfigError(
                f"{name}.init_up: 'zeros' with t_mode={self.t_mode!r}, learned_t='clamp' and theta_init="
                f"{self.resolved_theta_init()} can never train: the learned t starts at 0 and B = 0, so dL/dt "
                "(proportional to B A h) and dL/dB (proportional to t) are both 0. Use init_up='auto' or 'normal', "
                "a theta_init > 0, or learned_t='sigmoid'")

    # --- derived values ----------------------------------------------------------------------------------------
    def auto_ramp_steps(self, total_steps: int, warmup_steps: int = 0) -> int:
        """The T_h that ramp_steps="auto" means for a run of ``total_steps`` optimizer steps."""
        total = max(1, int(total_steps))
        wanted = int(warmup_steps) if warmup_steps and warmup_steps > 0 else round(self.ramp_fraction * total)
        return max(1, min(total, wanted))

    def has_learned_t(self) -> bool:
        return self.t_mode in ("learned", "schedule*learned")

    def has_schedule(self) -> bool:
        return self.t_mode in ("schedule", "schedule*learned")

    def resolved_theta_init(self) -> float:
        if self.theta_init is not None:
            return self.theta_init
        return 0.0 if self.learned_t == "clamp" else -6.0

    def learned_t_starts_at_zero(self) -> bool:
        """True when a learned t factor is exactly 0 at (default) init: the case where B = 0 would stall."""
        return self.has_learned_t() and self.learned_t == "clamp" and self.resolved_theta_init() <= 0.0

    def resolved_init_up(self) -> str:
        if self.init_up != "auto":
            return self.init_up
        return "normal" if self.learned_t_starts_at_zero() else "zeros"

    def resolve_pairs(self, n_blocks: int) -> list[tuple[int, int]]:
        """The pairs C for a model with ``n_blocks`` blocks, checked against the range -1 <= i < j <= L-1."""
        name, L = type(self).__name__, n_blocks
        if isinstance(self.topology, list):
            pairs = [(int(i), int(j)) for i, j in self.topology]
            for k, (i, j) in enumerate(pairs):
                if j > L - 1:
                    raise ConfigError(f"{name}.topology[{k}]: pair [{i}, {j}] is out of range for a model with {L} "
                                      f"blocks: need -1 <= i < j <= {L - 1} (i = -1 is the embeddings)")
            return pairs
        emb = self.include_embeddings
        match = _SPAN.match(self.topology)
        if match:
            k = int(match.group(1)) if match.group(1) else max(1, L // 3)
            if k > L - 1:
                raise ConfigError(f"{name}.topology: {self.topology!r} needs k in [1, {L - 1}] for a model with {L} "
                                  "blocks (no pair i -> i+k would fit)")
            return ([(-1, k - 1)] if emb else []) + [(i, i + k) for i in range(0, L - k)]
        if L < 2 and not emb:
            raise ConfigError(f"{name}.topology: {self.topology!r} needs at least 2 blocks (this model has {L}); "
                              "set include_embeddings=True to connect the embeddings to the only block")
        if self.topology == "single":
            return [(-1, L - 1)] if emb else [(0, L - 1)]
        return ([(-1, L - 1)] if emb else []) + [(i, L - 1) for i in range(0, L - 1)]  # to-last

    def parameter_count(self, n_blocks: int, hidden_size: int) -> int:
        """The spec's formula |C| * (2 d r + [d if bias]) + #t-scalars (full rank: d^2 per map; shared: one map).
        Trainable parameters only: the saved step counter (one integer) is not counted."""
        pairs = self.resolve_pairs(n_blocks)
        d = hidden_size
        per_map = (d * d if self.rank is None else 2 * d * self.rank) + (d if self.bias else 0)
        n_maps = 1 if self.share_maps else len(pairs)
        n_t = (1 if self.share_t else len(pairs)) if self.has_learned_t() else 0
        return n_maps * per_map + n_t
