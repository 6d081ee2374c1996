"""Fuzzing (hypothesis): config constructors, the recipe override parser, suite files and the E2E / GLUE readers
may only ever succeed or raise a peftlab error, whatever they are given. Case counts are in docs/reliability.md."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftlab import PeftlabError
from peftlab.config import PeftConfig
from peftlab.data.e2e import parse_e2e_csv, parse_mr
from peftlab.data.glue import GLUE_TASKS, parse_glue_tsv
from peftlab.registry import get_method, list_methods
from peftlab.train.recipe import SECTIONS, Recipe, apply_overrides, recipe_from_dict

CASES = int(os.environ.get("PEFTLAB_FUZZ_CASES", "400"))  # per test; 7 tests -> 2,800 inputs a run by default
FUZZ = settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3)), max_leaves=8)


def _field_names(config_cls) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls) if f.init]


METHODS = sorted(list_methods())


@FUZZ
@given(st.sampled_from(METHODS), st.data())
def test_config_constructors_only_raise_peftlab_errors(peft_type, data):
    config_cls = get_method(peft_type).config_cls
    names = _field_names(config_cls)
    keys = st.one_of(st.sampled_from(names), st.text(max_size=8))
    kwargs = data.draw(st.dictionaries(keys, json_values, max_size=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown keys are dropped with a warning
        try:
            config = PeftConfig.from_dict({"peft_type": peft_type, **kwargs}, source="fuzz")
        except PeftlabError:
            return
    # a config that was accepted survives its own JSON round trip
    again = PeftConfig.from_dict(json.loads(json.dumps(config.to_dict())), source="roundtrip")
    assert again.to_dict() == config.to_dict()


RECIPE_KEYS = [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)] + [
    f.name for f in dataclasses.fields(Recipe) if f.name not in SECTIONS]


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from(RECIPE_KEYS), st.text(max_size=10)),
                          st.one_of(st.text(max_size=12), st.sampled_from(["1e-3", "-1", "0", "[1, 2]", "{a: 1}",
                                                                           "true", "null", ".nan", ".inf", "'x'"]))),
                max_size=4),
       st.booleans())
def test_recipe_overrides_only_raise_peftlab_errors(pairs, drop_equals):
    items = [f"{k}{'' if drop_equals and i == 0 else '='}{v}" for i, (k, v) in enumerate(pairs)]
    try:
        recipe_from_dict(apply_overrides({"task": "e2e"}, items))
    except PeftlabError:
        pass


csv_text = st.text(alphabet=st.sampled_from(list('mr,ef"\n\r []abc=Name\t£é1')), max_size=200)


@FUZZ
@given(st.one_of(csv_text, st.builds(lambda body: "mr,ref\n" + body, csv_text)))
def test_e2e_csv_reader_only_raises_data_errors(text):
    try:
        records = parse_e2e_csv(text, "fuzz.csv")
    except PeftlabError:
        return
    assert all(r.mr and r.ref for r in records)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("name[]eatType, pub£")), max_size=60))
def test_mr_parser_only_raises_data_errors(mr):
    try:
        pairs = parse_mr(mr)
    except PeftlabError:
        return
    assert pairs and all(isinstance(k, str) and isinstance(v, str) for k, v in pairs)


tsv_text = st.text(alphabet=st.sampled_from(list("ab\t\n01.5-xe ")), max_size=160)


@FUZZ
@given(st.sampled_from(sorted(GLUE_TASKS)), tsv_text, st.booleans())
def test_glue_tsv_reader_only_raises_data_errors(task_name, text, with_header):
    task = GLUE_TASKS[task_name]
    if with_header:
        text = "\t".join(["h"] * task.n_columns) + "\n" + text
    try:
        examples = parse_glue_tsv(text, "fuzz.tsv", task)
    except PeftlabError:
        return
    for example in examples:
        if task.task_type == "regression":
            assert task.score_range[0] <= example.label <= task.score_range[1]
        else:
            assert 0 <= example.label < task.num_labels


suite_text = st.recursive(json_scalars, lambda inner: st.dictionaries(
    st.sampled_from(["version", "protocols", "p", "task", "arms", "a", "method", "seeds", "steps", "lr_grid",
                     "lr_from", "lr_steps", "overrides", "e2e", "lora", "baseline", "prefix_lengths",
                     "optim.lr"]), inner,
    max_size=4), max_leaves=10)


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(suite_text)
def test_suite_files_only_raise_peftlab_errors(tmp_path, data):
    from peftlab.bench import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    try:
        load_suite(path)
    except PeftlabError:
        pass


@FUZZ
@given(st.text(max_size=80))
def test_results_lines_only_raise_results_errors(tmp_path_factory, line):
    from peftlab.bench import ResultsFileError, read_results

    path = tmp_path_factory.mktemp("r") / "results.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    try:
        read_results(path)
    except ResultsFileError as err:
        assert re.search(r"results\.jsonl:\d+: ", str(err))  # the file and line are named
