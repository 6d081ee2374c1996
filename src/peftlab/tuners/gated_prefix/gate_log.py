"""Gate values during training, for the paper's "gate weight trends" analysis.

``gate_values(model)`` is the (L, l) matrix of gates; :class:`GateLogger` appends it to a JSONL file every N steps;
:func:`plot_gate_trends` draws one curve per prefix token and layer (matplotlib, optional: not a dependency).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ...errors import AdapterError, DataError
from ..prefix.model import prefix_layers


def gate_values(peft_model, adapter_name: str | None = None) -> torch.Tensor:
    """Gate value of every layer and prefix token, (L, l), fp32 on the CPU (default: the active adapter)."""
    adapter_name = adapter_name or peft_model.active_adapter
    layers = prefix_layers(peft_model.model, adapter_name)
    if not layers or adapter_name not in layers[0][1].gate:
        raise AdapterError(f"gate_values: adapter {adapter_name!r} has no prefix gate (a GatedPrefixConfig with "
                           "gate='G-a', 'G-b' or 'G-c')")
    with torch.no_grad():
        return torch.stack([layer.gate_values(adapter_name).float().cpu() for _, layer in layers])


class GateLogger:
    """Append ``{"step", "adapter", "time", "gates": [[...] per layer]}`` to ``path`` every ``every`` steps.

    Call it from a training loop: ``logger(peft_model, step)`` (returns True when it wrote a line).
    """

    def __init__(self, path: str | Path, every: int = 100, adapter_name: str | None = None) -> None:
        if every <= 0:
            raise ValueError(f"GateLogger.every: expected a positive number of steps, got {every}")
        self.path, self.every, self.adapter_name = Path(path), every, adapter_name
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, peft_model, step: int) -> None:
        name = self.adapter_name or peft_model.active_adapter
        record = {"step": int(step), "adapter": name, "time": time.time(),
                  "gates": gate_values(peft_model, name).tolist()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def __call__(self, peft_model, step: int) -> bool:
        if step % self.every:
            return False
        self.log(peft_model, step)
        return True


def read_gate_log(path: str | Path) -> list[dict]:
    """The records of a :class:`GateLogger` file; DataError names the line of a malformed record."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record["step"], record["gates"]  # noqa: B018  (both keys are required)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{number}: not a gate log record ({err})") from None
        records.append(record)
    return records


def plot_gate_trends(path: str | Path, out_file: str | Path, layers: list[int] | None = None) -> Path:
    """One panel per layer, one curve per prefix token: gate value over training steps. Needs matplotlib."""
    from ..._optional import require

    require("matplotlib", "report", "plot_gate_trends").use("Agg")
    import matplotlib.pyplot as plt
    records = read_gate_log(path)
    if not records:
        raise DataError(f"{path}: no gate records to plot")
    steps = [r["step"] for r in records]
    gates = torch.tensor([r["gates"] for r in records])  # (steps, L, l)
    layers = list(range(gates.shape[1])) if layers is None else layers
    fig, axes = plt.subplots(len(layers), 1, figsize=(6, 2.2 * len(layers)), sharex=True, squeeze=False)
    for ax, layer in zip(axes[:, 0], layers):
        for token in range(gates.shape[2]):
            ax.plot(steps, gates[:, layer, token].tolist(), linewidth=1)
        ax.set_ylabel(f"layer {layer}")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("prefix gate values (one curve per token)")
    fig.tight_layout()
    out_file = Path(out_file)
    fig.savefig(out_file)
    plt.close(fig)
    return out_file
