"""bf16 matrix products through fp32 kernels (peftlab.train.bf16_gemm), for CPUs that only emulate bf16.

Checklist: the mode reroutes exactly the bf16 products (forward and backward) and leaves every other op alone; its
results are bf16 and equal torch's own bf16 products to bf16 rounding; a training step under it gives the loss and
gradients of the plain bf16 step; `wanted` follows the machine and PEFTLAB_BF16_MATMULS; `peftlab train` enters it
for a bf16 run on such a CPU, skips compile there and records both in metrics.json. (Its speed is a benchmark:
benchmarks/bench_train.py, variant peftlab_bf16_bf16w_fp32gemm.)"""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import DEVICE, make_batch, make_tiny

import peftlab.hardware as hardware
from peftlab import ConfigError, LoraConfig, get_peft_model
from peftlab.cli import main
from peftlab.train.bf16_gemm import (FrozenFp32Copies, Fp32MatmulsForBf16, fp32_matmuls_for_bf16, matmul_choice,
                                     wanted)
from peftlab.train.speed import cast_frozen_weights
from peftlab.train.tasks import TargetOnlyCausalLMLoss

pytestmark = pytest.mark.skipif(DEVICE.type != "cpu", reason="a CPU mode: the GPU keeps its own bf16 kernels")


def _bf16(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).bfloat16()


@pytest.mark.parametrize("op", ["mm", "addmm", "bmm", "baddbmm", "linear", "matmul-3d"])
def test_each_bf16_product_is_rerouted_and_equals_torchs_to_bf16_rounding(op):
    a, b, c = _bf16(4, 24, 40, seed=0), _bf16(4, 40, 16, seed=1), _bf16(4, 24, 16, seed=2)
    calls = {
        "mm": lambda: torch.mm(a[0], b[0]),
        "addmm": lambda: torch.addmm(c[0], a[0], b[0]),
        "bmm": lambda: torch.bmm(a, b),
        "baddbmm": lambda: torch.baddbmm(c, a, b),
        "linear": lambda: torch.nn.functional.linear(a[0], b[0].t(), c[0, 0]),
        "matmul-3d": lambda: a @ b,
    }
    expected = calls[op]()
    with fp32_matmuls_for_bf16() as mode:
        got = calls[op]()
    assert sum(mode.counts.values()) >= 1
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    # one rounding of an fp32 sum: equal to the native/emulated bf16 kernel within a bf16 ulp or two
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 ** -7, atol=2 ** -7)
    exact = {  # the exact product in float64, rounded to bf16 once
        "mm": lambda: a[0].double() @ b[0].double(),
        "addmm": lambda: c[0].double() + a[0].double() @ b[0].double(),
        "bmm": lambda: a.double() @ b.double(), "baddbmm": lambda: c.double() + a.double() @ b.double(),
        "linear": lambda: a[0].double() @ b[0].double() + c[0, 0].double(),
        "matmul-3d": lambda: a.double() @ b.double()}[op]().bfloat16()
    torch.testing.assert_close(got.float(), exact.float(), rtol=2 ** -8, atol=1e-6)


def test_fp32_and_mixed_ops_are_left_alone():
    x, w = torch.randn(8, 16), torch.randn(16, 4)
    with fp32_matmuls_for_bf16() as mode:
        y = x @ w
        z = torch.softmax(y, -1).bfloat16() + 1  # elementwise bf16 ops: not products, not rerouted
    assert sum(mode.counts.values()) == 0
    assert torch.equal(y, x @ w) and z.dtype == torch.bfloat16


def test_disabled_is_a_no_op():
    with fp32_matmuls_for_bf16(False) as mode:
        assert mode is None
        assert torch._C._len_torch_dispatch_stack() == 0  # nothing entered: plain torch below
        out = _bf16(3, 5, seed=0) @ _bf16(5, 2, seed=1)
    assert out.dtype == torch.bfloat16


def _tiny_lora_with_bf16_frozen_weights(arch: str):
    """A tiny model with eager attention (peftlab's CPU training kernel), a LoRA adapter (B != 0) and its frozen
    weights in bf16, as ``peftlab train --bf16`` builds it."""
    model = make_tiny(arch)
    model.config._attn_implementation = "eager"
    model = get_peft_model(model, LoraConfig(r=4, init_weights=False))
    cast_frozen_weights(model, torch.bfloat16)
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_bf16_training_step_has_the_plain_bf16_loss_and_gradients(arch):
    """Forward and backward under bf16 autocast with bf16 frozen weights, eager attention (peftlab's CPU training
    kernel): the mode's step equals torch's bf16 step to bf16 rounding, and it reroutes backward products too."""
    results = []
    for rerouted in (False, True):
        model = _tiny_lora_with_bf16_frozen_weights(arch)
        loss_module = TargetOnlyCausalLMLoss(model)
        with fp32_matmuls_for_bf16(rerouted) as mode:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_module(**make_batch(arch))
            forward_products = sum(mode.counts.values()) if mode else 0
            loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads, forward_products, sum(mode.counts.values()) if mode else 0))
    (loss0, grads0, _, _), (loss1, grads1, forward, total) = results
    assert forward > 0 and total > forward  # the backward's products went through the mode as well
    assert loss1 == pytest.approx(loss0, rel=1e-2)
    assert grads0.keys() == grads1.keys() and grads0
    for name in grads0:
        assert grads1[name].dtype == torch.float32  # fp32 trainable tensors keep fp32 gradients
        err = (grads1[name] - grads0[name]).norm() / grads0[name].norm().clamp_min(1e-12)
        assert err < 5e-2, (name, float(err))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_frozen_fp32_copies_give_the_same_bits_as_upcasting_every_product(arch):
    """A training step (forward, backward) and a greedy decoding with the frozen weights read from their fp32 copies:
    the same loss, gradients and tokens, bit for bit, as upcasting them at every product; the copies serve the
    weights' products (forward, input gradient, the tied LM head) and nothing trainable is registered."""
    results = []
    for cached in (False, True):
        model = _tiny_lora_with_bf16_frozen_weights(arch)
        copies = FrozenFp32Copies(p for p in model.parameters() if not p.requires_grad) if cached else None
        if cached:
            frozen_2d = [p for p in model.parameters() if not p.requires_grad and p.dim() == 2]
            assert len(copies) == len({p.untyped_storage().data_ptr() for p in frozen_2d}) > 0
        loss_module = TargetOnlyCausalLMLoss(model)
        batch = make_batch(arch)
        with fp32_matmuls_for_bf16(True, copies) as mode:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_module(**batch)
            loss.backward()
            model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                tokens = model.generate(input_ids=batch["input_ids"][:, :4], attention_mask=batch["attention_mask"][:, :4],
                                        max_new_tokens=5, do_sample=False)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads, tokens, mode.counts["cached operands"]))
        if cached:  # a copy for each weight read, none for the rest
            assert 0 < copies.nbytes <= sum(p.numel() * 4 for p in frozen_2d)
    (loss0, grads0, tokens0, hits0), (loss1, grads1, tokens1, hits1) = results
    assert hits0 == 0 and hits1 > 0
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        assert torch.equal(grads0[name], grads1[name]), name
    assert torch.equal(tokens0, tokens1)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_kernels_and_the_dispatch_mode_compute_the_same_bits(arch):
    """The two implementations (CPU kernels replaced while entered, or a dispatch mode seeing every op) reroute the
    same products and give the same loss, gradients and greedy tokens, bit for bit, with and without copies."""
    results = {}
    for implementation in ("mode", "kernels"):
        for cached in (False, True):
            model = _tiny_lora_with_bf16_frozen_weights(arch)
            copies = FrozenFp32Copies(p for p in model.parameters() if not p.requires_grad) if cached else None
            batch = make_batch(arch)
            with fp32_matmuls_for_bf16(True, copies, implementation) as mode:
                assert mode.implementation == implementation
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = TargetOnlyCausalLMLoss(model)(**batch)
                loss.backward()
                model.eval()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    tokens = model.generate(input_ids=batch["input_ids"][:, :4],
                                            attention_mask=batch["attention_mask"][:, :4], max_new_tokens=5,
                                            do_sample=False)
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            results[implementation, cached] = (loss.detach(), grads, tokens, dict(mode.counts))
    for cached in (False, True):
        (loss0, grads0, tokens0, counts0), (loss1, grads1, tokens1, counts1) = (results["mode", cached],
                                                                              results["kernels", cached])
        assert counts0 == counts1 and counts0.get("mm.default", 0) + counts0.get("addmm.default", 0) > 0
        assert torch.equal(loss0, loss1) and torch.equal(tokens0, tokens1)
        assert grads0.keys() == grads1.keys()
        for name in grads0:
            assert torch.equal(grads0[name], grads1[name]), (cached, name)


def _peftlab_cpu_kernels() -> list[str]:
    """The product ops whose CPU kernel is peftlab's now (from the dispatcher's own table)."""
    return [op for op in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
            if any(line.startswith("CPU:") and "bf16_gemm" in line for line in torch._C._dispatch_dump(op).splitlines())]


def test_the_kernels_are_removed_on_exit_nest_and_stay_on_their_thread():
    """The four CPU kernels are peftlab's only while a context is entered; nested contexts count in the innermost;
    a product on another thread meanwhile is torch's own, not rerouted; torch's errors stay torch's."""
    import threading

    def small_ints(*shape, seed):  # every product exact in fp32 and bf16: results compare with equal
        return torch.randint(-4, 5, shape, generator=torch.Generator().manual_seed(seed)).bfloat16()

    x, weight = small_ints(3, 6, seed=0), small_ints(6, 4, seed=1)
    copies = FrozenFp32Copies([weight])
    assert _peftlab_cpu_kernels() == []
    elsewhere: list[torch.Tensor] = []
    with fp32_matmuls_for_bf16(True, copies, "kernels") as outer:
        assert _peftlab_cpu_kernels() == ["aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"]
        with fp32_matmuls_for_bf16(True, copies, "kernels") as inner:
            first = x @ weight  # makes the weight's copy
        weight.data.mul_(2)  # through .data: the copy is stale, so a rerouted product still gives `first`
        thread = threading.Thread(target=lambda: elsewhere.append(x @ weight))
        thread.start()
        thread.join()
        stale = x @ weight
        y = torch.randn(5, 3)
        assert torch.equal(y @ torch.eye(3), y)  # fp32 products: torch's kernel through its out= variant
        with pytest.raises(RuntimeError):
            torch.mm(torch.randn(2, 3), torch.randn(4, 5))  # a shape error is still torch's error
    assert _peftlab_cpu_kernels() == []
    assert inner.counts["mm.default"] == 1 and outer.counts["mm.default"] == 1
    assert torch.equal(stale, first)
    assert torch.equal(elsewhere[0], 2 * first)  # the other thread read the weight itself
    with pytest.raises(ValueError, match="auto, kernels or mode"):
        Fp32MatmulsForBf16(implementation="fast")


def test_frozen_fp32_copies_follow_in_place_changes_and_refuse_what_they_cannot_serve():
    def small_ints(*shape, seed):  # every product and sum exact in fp32 and bf16: results compare with equal
        return torch.randint(-4, 5, shape, generator=torch.Generator().manual_seed(seed)).bfloat16()

    weight = small_ints(6, 4, seed=0)
    trainable = small_ints(4, 3, seed=1).requires_grad_()
    copies = FrozenFp32Copies([weight, trainable, small_ints(5, seed=2), weight[1:]])
    assert len(copies) == 1  # only the frozen, 2-D, whole weight
    x = small_ints(3, 6, seed=3)
    with fp32_matmuls_for_bf16(True, copies) as mode:
        first = x @ weight  # the weight as it is
        transposed = weight.t() @ x.t()  # a transposed view: served from the same copy
        sliced = x[:, :5] @ weight[:5]  # part of the weight: upcast, not served
        with torch.no_grad():
            weight.mul_(2)  # in place: the copy is made again
        second = x @ weight
        doubled = weight.clone()
        weight.data.sub_(weight.data)  # through .data: the version counter does not move, the copy is stale ...
        stale = x @ weight
        copies.drop_copies()  # ... until the copies are dropped
        zero = x @ weight
    assert mode.counts["cached operands"] == 5
    assert torch.equal(stale, second) and not zero.any()
    assert torch.equal(first, (x.double() @ doubled.double() / 2).bfloat16())
    assert torch.equal(transposed, first.t())
    assert torch.equal(sliced, (x[:, :5].double() @ doubled[:5].double() / 2).bfloat16())
    assert torch.equal(second, (x.double() @ doubled.double()).bfloat16())
    assert copies.nbytes == weight.numel() * 4


def test_wanted_follows_the_machine_and_the_environment(monkeypatch):
    monkeypatch.delenv("PEFTLAB_BF16_MATMULS", raising=False)
    assert matmul_choice() == "auto"
    for native in (False, True):
        monkeypatch.setattr(hardware, "bf16_matmul_native", lambda device=None, native=native: native)
        assert wanted(True, "cpu") is (not native)
        assert wanted(False, "cpu") is False
        assert wanted(True, "cuda") is False  # a GPU keeps its own kernels
    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", "fp32")
    assert wanted(True, "cpu") is True  # native machine, forced (to compare with its own kernels)
    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", "native")
    monkeypatch.setattr(hardware, "bf16_matmul_native", lambda device=None: False)
    assert wanted(True, "cpu") is False
    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", "fast")
    with pytest.raises(ConfigError, match="PEFTLAB_BF16_MATMULS='fast'.*auto, fp32, native"):
        wanted(True, "cpu")


def test_train_enters_the_mode_skips_compile_and_records_both(tmp_path, shared_data, monkeypatch):
    """A bf16 run where the mode is wanted: every product of training, dev evaluation and the final evaluation goes
    through it, run.compile is skipped with a warning, and metrics.json says ``compiled: false``,
    ``bf16_matmuls: fp32 kernels``."""
    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", "fp32")
    entered: list[Fp32MatmulsForBf16] = []
    original = Fp32MatmulsForBf16.__enter__

    def enter(self):
        entered.append(self)
        return original(self)

    monkeypatch.setattr(Fp32MatmulsForBf16, "__enter__", enter)
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "lora", "--max-steps", "2",
                     "--train-limit", "16", "--eval-limit", "8", "--output-dir", str(run), "--data-dir",
                     str(shared_data), "--no-progress", "optim.batch_size=8", "run.bf16=true", "run.compile=true",
                     "run.report_to=none"])
    assert code == 0
    assert len(entered) == 1 and entered[0].counts["mm.default"] + entered[0].counts["addmm.default"] > 0
    assert entered[0].counts["cached operands"] > 0  # the frozen weights read from their fp32 copies (default)
    assert any("run.compile is skipped" in str(w.message) for w in caught)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["compiled"] is False and metrics["bf16_matmuls"] == "fp32 kernels"
    entered.clear()  # run.bf16_weight_copies=false: the mode, every weight upcast at its products
    code = main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "lora", "--max-steps", "1",
                 "--train-limit", "8", "--eval-limit", "8", "--output-dir", str(tmp_path / "upcast"), "--data-dir",
                 str(shared_data), "--no-progress", "optim.batch_size=8", "run.bf16=true", "run.report_to=none",
                 "run.bf16_weight_copies=false"])
    assert code == 0 and len(entered) == 1 and entered[0].counts["mm.default"] > 0
    assert entered[0].counts["cached operands"] == 0
    monkeypatch.setenv("PEFTLAB_BF16_MATMULS", "native")  # the same run with torch's kernels: no mode, no skip
    entered.clear()
    code = main(["train", "glue", "--task", "sst2", "--model", "minilm-l6", "--method", "lora", "--max-steps", "1",
                 "--train-limit", "8", "--eval-limit", "8", "--output-dir", str(tmp_path / "native"), "--data-dir",
                 str(shared_data), "--no-progress", "optim.batch_size=8", "run.bf16=true", "run.report_to=none"])
    assert code == 0 and not entered
    assert json.loads((tmp_path / "native" / "metrics.json").read_text())["bf16_matmuls"] == "native"
