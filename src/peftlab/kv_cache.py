"""A KV cache that grows in place: the decoding half of issue 13.

transformers' :class:`~transformers.DynamicCache` appends each new token with ``torch.cat``, so every decode step
copies the whole cache of every layer (a cost that grows with the length decoded: 19 % of a bf16 greedy decode of
SmolLM2 on the CPU, in ``torch.profiler``). :class:`GrowingCache` keeps one buffer per layer with room for the
prompt plus every new token, writes each token into its slot, and hands attention a view of the filled part. The
view holds the same values in the same order as ``DynamicCache``'s tensor, so attention computes the same numbers:
decoding with it gives byte-identical outputs (``tests/test_generate.py`` checks the cache against
``DynamicCache``; ``tests/test_method_contract.py`` checks beam search on it, for every method).

It is a ``DynamicCache`` to the model (the same class checks, the same mask sizes), so ``model.generate(...,
past_key_values=GrowingCache(capacity))`` uses it, and so does peftlab's greedy loop
(:func:`peftlab.greedy.greedy_generate`). When a write would pass the capacity the buffer doubles (a copy, as
``torch.cat`` would have done), so a wrong capacity is slow, never wrong. Beam search reorders the rows at every step,
which copies whole buffers here (unfilled slots too), so :func:`peftlab.generate.generate_texts` leaves beam search on
``DynamicCache`` (it was faster: docs/training.md).
"""
from __future__ import annotations

import functools

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys and values, (B, KV heads, capacity, head dim) buffers filled up to ``length``."""

    def __init__(self, capacity: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if capacity < 1:
            raise ValueError(f"GrowingLayer needs a capacity of at least 1 token, got {capacity}")
        self.capacity = int(capacity)
        self.length = 0
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._allocate(key_states, value_states, max(self.capacity, key_states.shape[-2]))

    def _allocate(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        batch, heads, _, key_dim = key_states.shape
        key_buffer = key_states.new_empty(batch, heads, capacity, key_dim)
        value_buffer = value_states.new_empty(batch, heads, capacity, value_states.shape[-1])
        if self.length:  # growing past the capacity: keep what is there
            key_buffer[:, :, :self.length] = self._key_buffer[:, :, :self.length]
            value_buffer[:, :, :self.length] = self._value_buffer[:, :, :self.length]
        self._key_buffer, self._value_buffer, self.capacity = key_buffer, value_buffer, capacity

    def _expose(self) -> None:
        # keys/values (B, KV, length, hd): views of the filled part, what DynamicLayer would hold after its cats
        self.keys = self._key_buffer[:, :, :self.length]
        self.values = self._value_buffer[:, :, :self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        end = self.length + new
        if end > self.capacity:
            self._allocate(key_states, value_states, max(end, 2 * self.capacity))
        self._key_buffer[:, :, self.length:end] = key_states
        self._value_buffer[:, :, self.length:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self.length = 0
        super().reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.length = max(0, self.length + tokens_to_remove)
        self._expose()

    def _select_rows(self, rows: torch.Tensor) -> None:
        # rows (B',) of batch indices: copies those rows of the whole buffers, unfilled slots included
        if not self.is_initialized:
            return
        rows = rows.to(self._key_buffer.device)
        self._key_buffer = self._key_buffer.index_select(0, rows)
        self._value_buffer = self._value_buffer.index_select(0, rows)
        self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not isinstance(indices, torch.Tensor):
            indices = torch.as_tensor(indices)
        if indices.dtype == torch.bool:
            indices = indices.nonzero().flatten()
        self._select_rows(indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select_rows(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            rows = torch.arange(self._key_buffer.shape[0], device=self._key_buffer.device)
            self._select_rows(rows.repeat_interleave(repeats))


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` whose layers are :class:`GrowingLayer` buffers of ``capacity`` tokens (prompt + new)."""

    def __init__(self, capacity: int) -> None:
        # Cache.__init__ directly: DynamicCache's would build DynamicLayers from a config
        Cache.__init__(self, layer_class_to_replicate=functools.partial(GrowingLayer, capacity))
