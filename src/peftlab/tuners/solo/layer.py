"""Solo Connection layers: a wrapper around each block that is a skip's source or destination.

* :class:`SoloMap` is one trainable map ``W = B A`` (or a full ``d x d`` matrix), optional bias.
* :class:`SoloSite` holds one adapter's parameters at one block: the maps of the skips that *end* there, their learned
  t scalars, and (at the adapter's lowest block, its "hub") the shared map / shared t / saved step counter.
* :class:`SoloState` is the cross-block state of one adapter: a plain Python object created by the tuner and shared by
  that adapter's wrappers (never a global or a thread-local). It holds the source activations of the forward pass
  in progress; the hub clears it when a forward pass starts and each activation is dropped after its last reader.
* :class:`SoloBlock` wraps a whole block (``AdapterLayer`` around the block module): it records sources and adds the
  skips after the wrapped block returns. Under activation checkpointing transformers checkpoints the *inner* block's
  ``forward``, so the wrapper's bookkeeping runs once per forward pass and is never replayed in backward.
"""
from __future__ import annotations

import math
import warnings
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..base import AdapterLayer
from ..dropout import dropout
from .config import AUTO_FALLBACK_RAMP_STEPS, SoloConnectionConfig

Pair = tuple[int, int]


def pair_key(source: int) -> str:
    """Key of the skip coming from ``source`` inside a destination's site (``from_emb`` for the embeddings)."""
    return "from_emb" if source < 0 else f"from_{source}"


class _StraightThroughClamp(torch.autograd.Function):
    """clamp(x, 0, 1) forward, identity backward: t stays in [0, 1] but theta keeps a gradient outside it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class SoloMap(nn.Module):
    """``x -> B A x (+ b)``, ``A``: (r, d), ``B``: (d, r); or ``x -> W x (+ b)``, ``W``: (d, d) if rank is None."""

    def __init__(self, d: int, rank: int | None, bias: bool, init_up: str, up_std: float,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.rank = rank
        if rank is None:
            self.weight = nn.Parameter(torch.empty(d, d, device=device))
        else:
            self.A = nn.Parameter(torch.empty(rank, d, device=device))
            self.B = nn.Parameter(torch.empty(d, rank, device=device))
        self.bias = nn.Parameter(torch.zeros(d, device=device)) if bias else None
        with torch.no_grad():
            if rank is not None:
                nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # LoRA's init of the down-projection
            up = self.weight if rank is None else self.B
            if init_up == "zeros":
                nn.init.zeros_(up)
            else:
                nn.init.normal_(up, std=up_std)

    def up(self) -> nn.Parameter:
        """The parameter that must be non-zero for a learned t to train (B, or W at full rank)."""
        return self.weight if self.rank is None else self.B

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d) -> (..., d)
        if self.rank is None:
            out = x @ self.weight.T
        else:
            out = (x @ self.A.T) @ self.B.T  # (..., r) then (..., d)
        return out if self.bias is None else out + self.bias


class SoloSite(nn.Module):
    """One adapter's parameters at one block (saved as ``<block>.solo.maps.from_<i>.A``, ``.theta.from_<i>``, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.maps = nn.ModuleDict()
        self.theta = nn.ParameterDict()
        self.step: nn.Parameter | None = None

    def add_step_counter(self, device: torch.device | None, start: int) -> nn.Parameter:
        """The saved homotopy step (an integer, never trained). Shape (1,), not a scalar: FSDP2's ``fully_shard``
        refuses 0-d parameters (adapters saved with a 0-d step still load, see ``SoloTuner.state_for_load``)."""
        self.step = nn.Parameter(torch.tensor([start], dtype=torch.long, device=device), requires_grad=False)
        return self.step


class SoloState:
    """Cross-block state of one Solo adapter on one model, shared by the adapter's :class:`SoloBlock` wrappers."""

    def __init__(self, adapter_name: str, pairs: list[Pair], config: SoloConnectionConfig) -> None:
        self.adapter_name = adapter_name
        self.pairs = list(pairs)
        self.t_mode: str = config.t_mode
        # None: ramp_steps="auto", not yet resolved by a training loop (see resolve_ramp_steps)
        self.ramp_steps: int | None = None if config.ramp_steps == "auto" else int(config.ramp_steps)
        self._warned_unresolved = False
        self.t_constant: float = config.t_constant
        self.learned_t: str = config.learned_t
        self.dropout: float = config.dropout
        self.source_norm: bool = config.source_norm
        self.source_after_skips: bool = config.source_after_skips
        self.sources = {i for i, _ in pairs}
        self.incoming: dict[int, list[Pair]] = {}
        for pair in pairs:
            self.incoming.setdefault(pair[1], []).append(pair)
        self.last_reader = {i: max(j for s, j in pairs if s == i) for i in self.sources}
        wrapped = {max(i, 0) for i in self.sources} | set(self.incoming)
        self.hub = min(wrapped)  # the adapter's lowest wrapped block: its forward starts a new pass
        self.wrapped_blocks = sorted(wrapped)
        # the sites that own the adapter's parameters (filled in by the tuner). Parameters are looked up through their
        # module on every use, never held: FSDP2 (and anything else that re-registers parameters) swaps them.
        self.maps: dict[Pair, SoloMap] = {}
        self.theta_sites: dict[Pair, tuple[SoloSite, str]] = {}
        self.step_site: SoloSite | None = None
        # activations of the forward pass in progress: source index -> (..., seq, d)
        self.activations: dict[int, torch.Tensor] = {}
        self._pass_factors: dict[str, torch.Tensor] | None = None  # t factors read at the hub (begin_forward)

    @property
    def step(self) -> nn.Parameter | None:
        """The saved step counter (a long tensor of shape (1,)), owned by the hub block's site."""
        return None if self.step_site is None else self.step_site.step

    def step_value(self) -> int:
        """The step counter as a Python int. Under FSDP2 outside a forward the counter is a DTensor shard (empty on
        every rank but one), so it is gathered first: a collective, like everything a training loop calls on all
        ranks."""
        assert self.step is not None
        step = self.step
        if type(step).__name__ == "DTensor":
            step = step.full_tensor()
        return int(step.reshape(-1)[0])

    def schedule_value(self) -> float:
        """The schedule's t after the steps so far, as a Python float (no tensor work: safe under FSDP2)."""
        return min(1.0, self.step_value() / float(self.effective_ramp_steps()))

    def theta(self, pair: Pair) -> nn.Parameter:
        site, key = self.theta_sites[pair]
        return site.theta[key]

    # --- homotopy ----------------------------------------------------------------------------------------------
    def effective_ramp_steps(self) -> int:
        """T_h in force: the resolved ramp_steps, or the fallback while "auto" is unresolved (warned once)."""
        if self.ramp_steps is not None:
            return self.ramp_steps
        if not self._warned_unresolved:
            self._warned_unresolved = True
            warnings.warn(f"Solo adapter {self.adapter_name!r}: ramp_steps='auto' was not resolved by a training loop; "
                          f"using {AUTO_FALLBACK_RAMP_STEPS} steps. Call peftlab.tuners.solo.resolve_ramp_steps(model, "
                          "total_steps, warmup_steps) before training (peftlab train does).", stacklevel=3)
        return AUTO_FALLBACK_RAMP_STEPS

    def schedule_factor(self, training: bool = False) -> torch.Tensor:
        """The schedule's t as an fp32 scalar tensor (no host sync). After s optimizer steps the adapter infers with
        min(1, s / T_h); in training mode the forward of step s + 1 already uses min(1, (s + 1) / T_h), so the first
        step has a gradient and the last step of a ramp trains at t = 1."""
        assert self.step is not None
        step = self.step.float() + 1.0 if training else self.step.float()
        return (step / float(self.effective_ramp_steps())).clamp(max=1.0)

    def learned_factor(self, pair: Pair) -> torch.Tensor:
        theta = self.theta(pair)
        if self.learned_t == "sigmoid":
            return torch.sigmoid(theta)
        return _StraightThroughClamp.apply(theta)

    def t(self, pair: Pair, training: bool = False) -> torch.Tensor | float:
        """The homotopy factor t of ``pair`` for the current step / parameters (``training``: the forward of the
        next optimizer step, see :meth:`schedule_factor`). Inside a forward pass, the factors that come from the
        hub block's site (the schedule's step, a shared theta) are the ones :meth:`begin_forward` read there."""
        if self.t_mode == "constant":
            return self.t_constant
        pass_cache = self._pass_factors if self._pass_factors is not None else {}
        schedule = pass_cache.get("schedule")
        if self.t_mode == "schedule":
            return self.schedule_factor(training) if schedule is None else schedule
        learned = pass_cache.get(pair)
        if learned is None:
            learned = self.learned_factor(pair)
        if self.t_mode == "learned":
            return learned
        return (self.schedule_factor(training) if schedule is None else schedule) * learned  # schedule*learned

    # --- per-forward state -------------------------------------------------------------------------------------
    def begin_forward(self, training: bool = False) -> None:
        """Start a pass (called by the hub block). The hub site's step and shared theta are read here, while the
        hub's parameters are materialised (under FSDP2 they are sharded again once the hub block's forward ends, and
        the later blocks that use them must not touch the sharded parameters)."""
        self.activations.clear()
        self._pass_factors = None
        factors: dict[object, torch.Tensor] = {}
        if self.t_mode in ("schedule", "schedule*learned"):
            factors["schedule"] = self.schedule_factor(training)
        if self.t_mode in ("learned", "schedule*learned"):
            for pair, (site, _) in self.theta_sites.items():  # thetas owned by the hub (all of them when shared)
                if site is self.step_site:
                    factors[pair] = self.learned_factor(pair)
        self._pass_factors = factors

    def end_forward(self) -> None:
        """End of a pass (called by the highest wrapped block): the pass's cached factors are dropped."""
        self._pass_factors = None

    def record(self, source: int, hidden: torch.Tensor) -> None:
        if source in self.sources:
            if self.source_norm:
                hidden = F.layer_norm(hidden, hidden.shape[-1:])
            self.activations[source] = hidden

    def read(self, pair: Pair) -> torch.Tensor:
        source, dest = pair
        hidden = self.activations.get(source)
        if hidden is None:
            where = "the embeddings (input of block 0)" if source < 0 else f"block {source}"
            raise RuntimeError(f"Solo adapter {self.adapter_name!r}: block {dest} needs the output of {where} from the "
                               "same forward pass, but it was not recorded (was a block skipped or called out of "
                               "order?)")
        if self.last_reader[source] == dest:
            del self.activations[source]  # free it as soon as the last skip from it has read it
        return hidden

    def skip_sum(self, dest: int, hidden: torch.Tensor, training: bool) -> torch.Tensor:
        """sum over pairs (i, dest) of t * W_i dropout(h_i), in the maps' dtype; shape (..., seq, d)."""
        total: torch.Tensor | None = None
        for pair in self.incoming[dest]:
            source = self.read(pair)
            if source.shape != hidden.shape:
                raise RuntimeError(f"Solo adapter {self.adapter_name!r}: skip {pair} joins a source of shape "
                                   f"{tuple(source.shape)} to a destination of shape {tuple(hidden.shape)}; "
                                   "source and destination must carry the same positions")
            solo_map = self.maps[pair]
            up = solo_map.up()
            x = source.to(device=up.device, dtype=up.dtype)  # maps live on their destination block's device
            if self.dropout > 0:
                x = dropout(x, self.dropout, training)
            t = self.t(pair, training)
            term = (t.to(up.device) if isinstance(t, torch.Tensor) else t) * solo_map(x)
            total = term if total is None else total + term
        assert total is not None
        return total


class SoloBlock(AdapterLayer):
    """A block wrapped for Solo: records its input (source -1) / output (source i) and adds the skips ending here."""

    adapter_containers = ("solo",)

    def __init__(self, base_layer: nn.Module, block_index: int) -> None:
        super().__init__(base_layer)
        self.block_index = block_index
        self.solo = nn.ModuleDict()
        self.states: dict[str, SoloState] = {}

    def add_adapter(self, name: str, state: SoloState) -> SoloSite:
        site = SoloSite()
        self.solo[name] = site
        self.states[name] = state
        return site

    def delete_adapter(self, name: str) -> None:
        super().delete_adapter(name)
        self.states.pop(name, None)

    @staticmethod
    def _hidden_input(args: tuple, kwargs: dict) -> torch.Tensor:
        if args and isinstance(args[0], torch.Tensor):
            return args[0]
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            return kwargs["hidden_states"]
        raise RuntimeError("SoloBlock: could not find the block's hidden-states input (first positional argument or "
                           "hidden_states=...)")

    def forward(self, *args, **kwargs):
        if not self.uses_adapter():
            return self.base_layer(*args, **kwargs)
        index = self.block_index
        states = [self.states[name] for name in self.active_adapters]
        for state in states:
            if state.hub == index:
                state.begin_forward(self.training)
            if index == 0 and -1 in state.sources:
                state.record(-1, self._hidden_input(args, kwargs))
        output = self.base_layer(*args, **kwargs)
        if isinstance(output, torch.Tensor):
            hidden, rest = output, None
        elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            hidden, rest = output[0], tuple(output[1:])
        else:
            raise RuntimeError(f"SoloBlock: block {index} returned {type(output).__name__}; expected a tensor or a "
                               "tuple starting with the hidden states")
        for state in states:
            if not state.source_after_skips:
                state.record(index, hidden)
            if index in state.incoming:
                hidden = hidden + state.skip_sum(index, hidden, self.training).to(hidden.dtype)
            if state.source_after_skips:
                state.record(index, hidden)
            if index == state.wrapped_blocks[-1]:
                state.end_forward()
        return hidden if rest is None else (hidden,) + rest


def solo_states(model: nn.Module) -> dict[str, SoloState]:
    """Every Solo adapter's state found in ``model`` (a PeftModel or the wrapped transformers model), by name."""
    found: dict[str, SoloState] = {}
    for module in model.modules():
        if isinstance(module, SoloBlock):
            for name, state in module.states.items():
                found.setdefault(name, state)
    return found
