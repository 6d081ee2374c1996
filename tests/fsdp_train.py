"""Worker of tests/test_fsdp.py: 3 optimizer steps of a tiny GPT-2 with an adapter, on one process (plain) or under
``torchrun --nproc_per_node 2`` with FSDP2 (``torch.distributed.fsdp.fully_shard``, gloo, CPU); the same global batch
of 8 either way.

accelerate 1.15 turns FSDP on only for accelerator back-ends (CUDA, XPU, NPU, ...): with ``Accelerator(cpu=True)`` it
silently runs DDP and ignores the FSDP plugin (accelerate/state.py), so on CPU this worker shards with torch's own
FSDP2 API, which is what accelerate's FSDP2 path calls on a GPU.

    python tests/fsdp_train.py METHOD OUT_DIR
    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_train.py METHOD OUT_DIR
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import VOCAB, make_tiny  # noqa: E402

import peftlab  # noqa: E402

GLOBAL_BATCH, STEPS = 8, 3


def make_model(method: str) -> peftlab.PeftModel:
    """The tiny GPT-2 with the adapter every run starts from (same seeds in every process)."""
    config = (peftlab.LoraConfig(r=4, target_modules=["c_attn"], lora_dropout=0.0) if method == "lora"
              else peftlab.SoloConnectionConfig(rank=2, ramp_steps=2))
    model = peftlab.get_peft_model(make_tiny("gpt2"), config)
    torch.manual_seed(1)
    with torch.no_grad():  # B = 0 / zero maps start as the identity; move them so every parameter has a gradient
        for _, param in model.adapter_parameters("default").items():
            if param.is_floating_point():
                param.add_(0.05 * torch.randn_like(param))
    return model


def main(method: str, out_dir: Path) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    model = make_model(method)
    if world > 1:  # FSDP2: every GPT2Block its own shard group, then the root; frozen and trainable params mixed
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        for block in model.base_model.model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    sharded = sum(type(p).__name__ == "DTensor" for p in model.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tuner = model._tuner("default")
    tuner.on_train_begin(model, "default", STEPS, 0)
    ids = torch.randint(3, VOCAB, (STEPS, GLOBAL_BATCH, 12), generator=torch.Generator().manual_seed(0))
    share = GLOBAL_BATCH // world
    for step in range(STEPS):
        chunk = ids[step, rank * share:(rank + 1) * share]
        model(input_ids=chunk, labels=chunk).loss.backward()  # FSDP2 averages the gradients over the ranks
        optimizer.step()
        optimizer.zero_grad()
        tuner.on_optimizer_step(model, "default")
    model.save_pretrained(out_dir, is_main_process=rank == 0)  # gathers the shards: every rank calls it
    full = {k: (v.full_tensor() if type(v).__name__ == "DTensor" else v) for k, v in model.state_dict().items()}
    if rank == 0:  # the function form picks the adapter out of a whole (gathered) state dict
        picked = peftlab.get_peft_model_state_dict(model, full)
        torch.save({k: v.detach().cpu() for k, v in picked.items()}, out_dir / "from_full_state_dict.pt")
        print(f"[fsdp_train] world {world}: saved {len(picked)} tensors, {sharded} sharded parameters")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
