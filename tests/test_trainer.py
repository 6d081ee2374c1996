"""peftlab models train in transformers.Trainer, PeftlabTrainer and TRL's SFTTrainer (tiny random models)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import VOCAB, make_tiny
from transformers import Trainer, TrainingArguments

import peftlab
from peftlab.integrations import PeftlabCallback, PeftlabTrainer
from peftlab.tuners.solo.homotopy import homotopy_step


def lm_rows(n: int = 16, length: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (length,), generator=gen)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return rows


def args(tmp_path: Path, **overrides) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=4, max_steps=6,
                learning_rate=5e-3, logging_steps=2, save_strategy="no", report_to=[], seed=0,
                dataloader_num_workers=0, disable_tqdm=True)
    base.update(overrides)
    return TrainingArguments(**base)


def adapter_snapshot(pm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pm.get_peft_model_state_dict().items()}


def base_snapshot(pm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pm.named_parameters() if not v.requires_grad}


def test_plain_trainer_keeps_columns_and_trains_only_the_adapter(tmp_path):
    """The issue's report: plain Trainer on input_ids/labels rows failed with "The batch received was empty"."""
    pm = peftlab.get_peft_model(make_tiny("gpt2"), peftlab.LoraConfig(r=4, target_modules=["c_attn"]))
    before, frozen = adapter_snapshot(pm), base_snapshot(pm)
    result = Trainer(model=pm, args=args(tmp_path), train_dataset=lm_rows()).train()
    assert result.global_step == 6 and torch.isfinite(torch.tensor(result.training_loss))
    after = adapter_snapshot(pm)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the adapter did not change"
    for key, value in base_snapshot(pm).items():
        assert torch.equal(value, frozen[key]), f"frozen weight {key} changed"


def test_plain_trainer_with_datasets_dataset_keeps_token_type_ids(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"input_ids": r["input_ids"].tolist(), "attention_mask": r["attention_mask"].tolist(),
             "token_type_ids": [0] * 12, "labels": int(i % 3), "unused_text": "x"} for i, r in enumerate(lm_rows())]
    pm = peftlab.get_peft_model(make_tiny("bert"), peftlab.LoraConfig(r=2, target_modules=["query", "value"]))
    trainer = PeftlabTrainer(model=pm, args=args(tmp_path), train_dataset=datasets.Dataset.from_list(rows))
    kept = trainer._remove_unused_columns(trainer.train_dataset).column_names
    assert set(kept) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert trainer.train().global_step == 6


def test_callback_advances_solo_homotopy_and_resolves_auto_ramp(tmp_path):
    pm = peftlab.get_peft_model(make_tiny("gpt2"), peftlab.SoloConnectionConfig(rank=2))
    assert pm.peft_config["default"].ramp_steps == "auto"
    trainer = Trainer(model=pm, args=args(tmp_path, max_steps=8, warmup_steps=4), train_dataset=lm_rows(),
                      callbacks=[PeftlabCallback()])
    trainer.train()
    assert homotopy_step(pm) == 8
    assert pm.peft_config["default"].ramp_steps == 4  # "auto" = the run's warm-up
    logged = [rec for rec in trainer.state.log_history if "loss" in rec]
    assert logged and all("solo_step" in rec for rec in logged)
    assert [rec["solo_step"] for rec in logged] == [rec["step"] for rec in logged]


def test_callback_warns_when_an_explicit_ramp_outlasts_the_run(tmp_path):
    pm = peftlab.get_peft_model(make_tiny("gpt2"), peftlab.SoloConnectionConfig(rank=2, ramp_steps=100))
    trainer = Trainer(model=pm, args=args(tmp_path), train_dataset=lm_rows(), callbacks=[PeftlabCallback()])
    with pytest.warns(UserWarning, match="t = 0.060 < 1"):
        trainer.train()


def test_callback_refuses_a_model_that_is_not_peftlab(tmp_path):
    trainer = Trainer(model=make_tiny("gpt2"), args=args(tmp_path), train_dataset=lm_rows(),
                      callbacks=[PeftlabCallback()])
    with pytest.raises(peftlab.AdapterError, match="not a peftlab PeftModel"):
        trainer.train()


@pytest.mark.parametrize("method", ["lora", "solo"])
def test_peftlab_trainer_checkpoints_adapters_and_resumes_exactly(tmp_path, method):
    """A tied-embedding model (GPT-2): checkpoints are adapter folders, and resuming gives the same adapter."""
    def make():
        config = (peftlab.LoraConfig(r=4, target_modules=["c_attn"]) if method == "lora"
                  else peftlab.SoloConnectionConfig(rank=2))
        return peftlab.get_peft_model(make_tiny("gpt2"), config)

    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    whole = make()
    PeftlabTrainer(model=whole, args=args(full_dir, save_strategy="steps", save_steps=3),
                   train_dataset=lm_rows()).train()
    checkpoint = full_dir / "out" / "checkpoint-3"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert (checkpoint / "adapter_config.json").is_file()
    assert not (checkpoint / "model.safetensors").exists(), "the frozen base model was written"

    resumed = make()
    PeftlabTrainer(model=resumed, args=args(cut_dir), train_dataset=lm_rows()).train(
        resume_from_checkpoint=str(checkpoint))
    want, got = adapter_snapshot(whole), adapter_snapshot(resumed)
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)
    if method == "solo":
        assert homotopy_step(resumed) == 6

    reloaded = peftlab.PeftModel.from_pretrained(make_tiny("gpt2"), full_dir / "out" / "checkpoint-6")
    for key, value in reloaded.get_peft_model_state_dict().items():
        torch.testing.assert_close(value, want[key])


def test_peftlab_trainer_loads_the_best_adapter_at_the_end(tmp_path):
    pm = peftlab.get_peft_model(make_tiny("gpt2"), peftlab.LoraConfig(r=4, target_modules=["c_attn"]))
    trainer = PeftlabTrainer(model=pm, args=args(tmp_path, eval_strategy="steps", eval_steps=2, save_strategy="steps",
                                                 save_steps=2, load_best_model_at_end=True,
                                                 metric_for_best_model="loss"),
                             train_dataset=lm_rows(), eval_dataset=lm_rows(8, seed=1))
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)
    saved = peftlab.PeftModel.from_pretrained(make_tiny("gpt2"), best).get_peft_model_state_dict()
    for key, value in adapter_snapshot(pm).items():
        torch.testing.assert_close(value, saved[key])


def test_peftlab_trainer_refuses_a_plain_model(tmp_path):
    with pytest.raises(peftlab.AdapterError, match="trains a peftlab PeftModel"):
        PeftlabTrainer(model=make_tiny("gpt2"), args=args(tmp_path), train_dataset=lm_rows())


def tiny_tokenizer():
    """A word-level tokenizer over the tiny models' 96 ids (pad 0, bos 1, eos 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def test_trl_sft_trainer_trains_a_peftlab_model(tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    tokenizer = tiny_tokenizer()
    pm = peftlab.get_peft_model(make_tiny("gpt2"), peftlab.SoloConnectionConfig(rank=2))
    rows = [{"input_ids": r["input_ids"].tolist()} for r in lm_rows()]
    config = trl.SFTConfig(output_dir=str(tmp_path / "sft"), use_cpu=True, per_device_train_batch_size=4,
                           max_steps=4, learning_rate=5e-3, save_strategy="no", report_to=[], logging_steps=2,
                           disable_tqdm=True, dataset_kwargs={"skip_prepare_dataset": True}, packing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from peftlab.integrations.trl import PeftlabSFTTrainer

        before = adapter_snapshot(pm)
        trainer = PeftlabSFTTrainer(model=pm, args=config, train_dataset=datasets.Dataset.from_list(rows),
                                    processing_class=tokenizer)
        trainer.train()
    assert homotopy_step(pm) == 4
    after = adapter_snapshot(pm)
    assert any(not torch.equal(before[k], after[k]) for k in before if not k.endswith(".step"))
    losses = [rec["loss"] for rec in trainer.state.log_history if "loss" in rec]
    assert losses and all(torch.isfinite(torch.tensor(x)) for x in losses)


def test_peftlab_trainer_bf16_on_an_emulating_cpu_takes_fp32_kernels(tmp_path, monkeypatch):
    """``bf16=True`` where bf16 is only emulated: training and prediction steps run in the mode that computes bf16
    products with fp32 kernels (peftlab.train.bf16_gemm), and the run trains; with the mode off, nothing enters it."""
    from peftlab.train.bf16_gemm import Fp32MatmulsForBf16

    entered: list[Fp32MatmulsForBf16] = []
    original = Fp32MatmulsForBf16.__enter__
    monkeypatch.setattr(Fp32MatmulsForBf16, "__enter__", lambda self: entered.append(self) or original(self))
    for choice, expect in (("fp32", True), ("native", False)):
        monkeypatch.setenv("PEFTLAB_BF16_MATMULS", choice)
        entered.clear()
        pm = peftlab.get_peft_model(make_tiny("gpt2"), peftlab.LoraConfig(r=4, target_modules=["c_attn"]))
        trainer = PeftlabTrainer(model=pm, args=args(tmp_path / choice, bf16=True, max_steps=2),
                                 train_dataset=lm_rows(8), eval_dataset=lm_rows(4, seed=1))
        result = trainer.train()
        loss = trainer.evaluate()["eval_loss"]
        assert result.global_step == 2 and torch.isfinite(torch.tensor([result.training_loss, loss])).all()
        assert bool(entered) is expect
        if expect:  # two training steps, one prediction step (4 rows of batch 8), each rerouting products
            assert len(entered) == 3 and all(sum(mode.counts.values()) > 0 for mode in entered)
