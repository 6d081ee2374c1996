"""Packed causal-LM batches (``data.pack_per_row``): the layout, its checks, and a real run that uses it.

That a packed batch gives the padded batch's loss and gradients for every method is a contract property
(tests/test_method_contract.py::test_packed_batch_gives_the_padded_loss_and_gradients).
"""
from __future__ import annotations

import json

import pytest
import torch

from peftlab import ConfigError
from peftlab.cli import main
from peftlab.train import collate_causal_lm
from peftlab.train.batching import IGNORE_INDEX, batch_tokens, pack_rows
from peftlab.train.recipe import recipe_from_dict


class IdsTokenizer:
    pad_token_id, eos_token_id = 0, 2

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [int(t) for t in text.split()]}


def examples(lengths):
    """(prompt, target) texts whose ids say which example and which token they are: example i, token j -> id
    100 * (i + 1) + j, so a layout can be read back."""
    prompts, targets = [], []
    for i, (n_prompt, n_target) in enumerate(lengths):
        ids = [100 * (i + 1) + j for j in range(n_prompt + n_target)]
        prompts.append(" ".join(map(str, ids[:n_prompt])))
        targets.append(" ".join(map(str, ids[n_prompt:])))
    return prompts, targets


def segments(batch):
    """Every (row, start, length) segment of a packed batch, read from its restarting position ids."""
    found = []
    for r, positions in enumerate(batch.position_ids.tolist()):
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        found += [(r, a, b - a) for a, b in zip(starts, starts[1:])]
    return found


def test_pack_rows_balances_longest_first_and_keeps_the_order_within_a_row():
    assert pack_rows([5, 9, 2, 7], 2) == [[1, 2], [0, 3]]  # 9 -> row 0, 7 -> row 1, 5 -> row 1, 2 -> row 0
    assert pack_rows([3, 3, 3], 5) == [[0], [1], [2]]  # never more rows than examples
    assert pack_rows([4, 1, 1, 1, 1], 2) == [[0], [1, 2, 3, 4]]


def test_packed_layout_holds_every_example_once_with_its_own_positions_and_labels():
    lengths = [(3, 5), (2, 2), (4, 6), (1, 3), (5, 1)]  # eos is added: targets get one more token
    prompts, targets = examples(lengths)
    tokenizer = IdsTokenizer()
    padded = collate_causal_lm(tokenizer, prompts, targets)
    packed = collate_causal_lm(tokenizer, prompts, targets, pack_per_row=2)
    assert packed.packed and not padded.packed
    assert packed.input_ids.shape[0] == 3 and packed.attention_mask is None
    assert packed.n_tokens == padded.n_tokens == sum(p + t + 1 for p, t in lengths) == int(padded.attention_mask.sum())
    assert packed.n_target_tokens == padded.n_target_tokens == sum(t + 1 for _, t in lengths)
    seen = []
    for row, start, length in segments(packed):
        ids = packed.input_ids[row, start:start + length].tolist()
        labels = packed.labels[row, start:start + length].tolist()
        if ids[0] == tokenizer.pad_token_id:  # the row's trailing padding: no labels
            assert set(ids) == {0} and set(labels) == {IGNORE_INDEX}
            continue
        i = ids[0] // 100 - 1
        n_prompt, n_target = lengths[i]
        want = [100 * (i + 1) + j for j in range(n_prompt + n_target)] + [tokenizer.eos_token_id]
        assert ids == want and packed.position_ids[row, start:start + length].tolist() == list(range(length))
        assert labels == [IGNORE_INDEX] * n_prompt + want[n_prompt:]  # the prompt (and first token) ignored
        seen.append(i)
    assert sorted(seen) == list(range(len(lengths)))
    inputs = packed.as_model_inputs()
    assert set(inputs) == {"input_ids", "position_ids", "labels"}
    assert batch_tokens(inputs) == packed.input_ids.numel()
    assert batch_tokens(padded.as_model_inputs()) == padded.n_tokens


def test_a_packed_example_without_prompt_does_not_learn_from_the_example_before_it():
    prompts, targets = examples([(2, 3), (0, 4)])
    packed = collate_causal_lm(IdsTokenizer(), prompts, targets, pack_per_row=2)
    row = packed.input_ids[0].tolist()
    second = row.index(200)  # example 1 has no prompt: its first token follows example 0's eos
    assert packed.labels[0, second] == IGNORE_INDEX and packed.labels[0, second + 1] == 201
    padded = collate_causal_lm(IdsTokenizer(), prompts, targets)
    assert packed.n_target_tokens == padded.n_target_tokens  # the padded row's first label is ignored as well


def test_packing_refuses_bad_values():
    prompts, targets = examples([(1, 1)])
    with pytest.raises(ValueError, match="pack_per_row"):
        collate_causal_lm(IdsTokenizer(), prompts, targets, pack_per_row=0)
    with pytest.raises(ConfigError, match=r"data\.pack_per_row.*>= 1"):
        recipe_from_dict({"data": {"pack_per_row": 0}})
    with pytest.raises(ConfigError, match=r"data\.pack_per_row.*e2e"):
        recipe_from_dict({"task": "glue", "data": {"pack_per_row": 2}})
    assert recipe_from_dict({"data": {"pack_per_row": 2}}).data.pack_per_row == 2


def test_the_pack_flag_sets_two_examples_to_a_row_and_an_override_wins(capsys):
    assert main(["train", "e2e", "--method", "lora", "--pack", "--print-config"]) == 0
    assert "pack_per_row: 2" in capsys.readouterr().out
    assert main(["train", "e2e", "--method", "lora", "--pack", "data.pack_per_row=4", "--print-config"]) == 0
    assert "pack_per_row: 4" in capsys.readouterr().out
    assert main(["train", "e2e", "--method", "lora", "--print-config"]) == 0
    assert "pack_per_row: 1" in capsys.readouterr().out
    assert main(["train", "glue", "--model", "minilm-l6", "--method", "lora", "--pack", "--print-config"]) != 0
    assert "data.pack_per_row" in capsys.readouterr().err


@pytest.mark.slow
def test_a_packed_run_trains_and_its_dev_loss_starts_where_the_padded_one_does(tmp_path, shared_data):
    """`peftlab train` with packed batches on the real model: the dev loss before training (packed dev batches)
    equals the padded run's, and training lowers it."""
    dev = {}
    for pack in (1, 2):
        run = tmp_path / f"pack{pack}"
        code = main(["train", "e2e", "--model", "smollm2-135m", "--method", "lora", "--max-steps", "6",
                     "--eval-limit", "2", "--output-dir", str(run), "--data-dir", str(shared_data), "--no-progress",
                     f"data.pack_per_row={pack}", "data.dev_limit=32", "run.eval_every=6", "optim.lr=3e-3",
                     "optim.warmup_steps=0"])
        assert code == 0
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        dev[pack] = [r["eval"]["dev_loss"] for r in log if "eval" in r]
        assert all("tokens_per_second" in r for r in log if "loss" in r)
    assert len(dev[1]) == len(dev[2]) == 2
    assert dev[2][0] == pytest.approx(dev[1][0], rel=1e-4)
    assert dev[2][-1] < dev[2][0]
