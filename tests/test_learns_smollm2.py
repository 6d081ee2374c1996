"""It learns: LoRA on the real pretrained SmolLM2-135M lowers the held-out E2E loss within a few steps."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from peftlab import LoraConfig, get_peft_model
from peftlab.train import collate_causal_lm
from peftlab.zoo import load_model, load_tokenizer

pytestmark = pytest.mark.slow


def _pairs(path, n):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:n]
    return [(row["mr"] + " ||", " " + row["ref"]) for row in rows]


def _loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return model(**batch.as_model_inputs()).loss.item()


def test_lora_loss_falls_on_e2e(shared_data):
    torch.manual_seed(0)
    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m")
    train = _pairs(shared_data / "e2e" / "devset.csv", 48)  # training rows
    held_out = _pairs(shared_data / "e2e" / "testset_w_refs.csv", 16)  # other MRs, never trained on
    eval_batch = collate_causal_lm(tokenizer, [p for p, _ in held_out], [t for _, t in held_out])
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v"]))
    before = _loss(model, eval_batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for step in range(6):
        chunk = train[step * 8:(step + 1) * 8]
        batch = collate_causal_lm(tokenizer, [p for p, _ in chunk], [t for _, t in chunk])
        model(**batch.as_model_inputs()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _loss(model, eval_batch)
    assert math.isfinite(after) and after < 0.8 * before, (before, after)
    # and only the adapter moved: disabling it gives back the pretrained loss
    with model.disable_adapter():
        assert _loss(model, eval_batch) == pytest.approx(before, abs=1e-5)
