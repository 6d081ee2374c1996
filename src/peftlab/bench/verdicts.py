"""The claim verdicts of the quality suite (``docs/benchmarks.md``), from its result lines.

Each claim turns comparisons of two arms (:func:`.evidence.compare`: the seed means' difference ``d`` against
``u = 2 * sqrt(s1^2/n1 + s2^2/n2)``) into ``holds`` / ``does not hold`` / ``inconclusive`` (see the ``verdict_*``
functions and :data:`RULES`).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

from .evidence import (E2E_METRICS, PREFIX_VARIANTS, Comparison, Results, Stat, compare, convergence_step, curve, fmt,
                       headline, stat, sub)

__all__ = ["RULES", "Verdict", "all_verdicts", "convergence_steps", "seed_method_losses", "spread", "verdict_best",
           "verdict_convergence", "verdict_kernel_mix", "verdict_solo", "verdict_stability"]

SOLO_RATIO = 0.41  # the claim: 59% fewer trainable parameters than LoRA

RULES = [
    "Two arms are compared on a metric by the difference of their seed means d (positive: the first is better) "
    "against u = 2·sqrt(s1²/n1 + s2²/n2) (sample std): better if d > u, worse if d < −u, else a tie; "
    "fewer than 2 seeds on either side is inconclusive.",
    "(a) e2e-mini solo-r4 vs lora on BLEU; solo-r4 must train ≤ 0.41× LoRA's parameters. Holds if better; does "
    "not hold if worse, or on a tie with ≥ 3 seeds on both sides (no measurable gain); otherwise inconclusive.",
    "(b) kernel-mix vs lora on e2e-mini BLEU and each glue-mini task's headline metric. Does not hold if worse on "
    "any task; holds if not worse on every measured task with E2E and ≥ 1 GLUE task measured; else inconclusive.",
    "(c1) prefix-length: spread = max − min over lengths of a variant's mean headline metric; s = mean over "
    "lengths of plain's seed std. Holds if spread(residual+gate) < spread(plain) − s, does not hold if "
    "> spread(plain) + s, else inconclusive; needs every length of both with ≥ 2 seeds.",
    "(c2) steps to 95% of a run's final dev score (GLUE: first step with dev ≥ 0.95·final; E2E dev loss: first "
    "step with (loss0 − loss)/(loss0 − final) ≥ 0.95), residual vs plain over every run at the lengths both "
    "have, fewer steps is better: holds if better, does not hold if worse, else inconclusive.",
    "(c3) residual+gate vs each other variant at the long lengths (50, 100): holds if better than all at both, "
    "does not hold if worse than any, else inconclusive.",
    "(a), (b): E2E BLEU is decoded greedily for the rule. Where the decoding check (the same runs decoded with "
    "another setting, e.g. the papers' beam search) has ≥ 2 seeds on both arms and reaches another outcome, the "
    "reason says so (the result depends on the decoding); the verdict stays the greedy rule's.",
    "A verdict on a protocol that is not complete is marked provisional (k of n runs).",
]


@dataclass
class Verdict:
    claim: str
    measured: str
    status: str  # holds | does not hold | inconclusive
    label: str  # the verdict cell, e.g. "inconclusive: not run yet (0 of 6 runs)"
    reason: str


def _final(claim: str, measured: str, status: str, reason: str, done: int, total: int, label: str = "") -> Verdict:
    """A verdict whose reason says how much of its data is in when that is not all of it."""
    if done < total and f"{done} of {total} runs" not in reason:
        reason += f" ({'provisional: ' if status != 'inconclusive' else ''}{done} of {total} runs)"
    return Verdict(claim, measured, status, label or status, reason)


def _not_run(claim: str, done: int, total: int, measured: str = "") -> Verdict:
    if total == 0:
        return Verdict(claim, measured or "—", "inconclusive", "inconclusive: not in this suite",
                       "the suite has no runs for this claim")
    return Verdict(claim, measured or "—", "inconclusive", f"inconclusive: not run yet ({done} of {total} runs)",
                   "the runs this claim needs have no result lines yet")


CLAIMS = {
    "a": "(a) Solo Connection beats LoRA on E2E with 59% fewer trainable parameters",
    "b": "(b) Kernel-mix attains or improves strong baselines on NLG and NLU",
    "c1": "(c1) Gated residual prefix is more stable across prefix lengths than prefix tuning",
    "c2": "(c2) The residual converges faster",
    "c3": "(c3) Residual + gate is best, especially for long prefixes",
}


def _dev_loss_context(res: Results, a: tuple[str, str, str], b: tuple[str, str, str]) -> str:
    """Context for an E2E claim, not part of its rule: the two arms' best dev losses (lower is better), which can
    rank them differently from the decoded metrics."""
    def losses(cell: tuple[str, str, str]) -> list[float | None]:
        return [sub(r, "dev").get("dev_loss") for r in res.get(*cell)]  # stat() drops what is not a number

    dev = compare(losses(a), losses(b), higher_is_better=False)
    return (f"best dev loss (context, not the claim's metric) {a[2]} {dev.a.text()} vs {b[2]} {dev.b.text()}: "
            f"{dev.text()}")


def _decoding_comparisons(res: Results, a: tuple[str, str, str],
                          b: tuple[str, str, str]) -> list[tuple[str, Comparison]]:
    """(setting, BLEU of arm a vs arm b) for each setting of the decoding check (the two arms' runs decoded again,
    e.g. with the papers' beam search), on the seeds both arms have there."""
    out = []
    lines = [r for r in res.checks if r.get("protocol") == a[0]]
    for setting in dict.fromkeys(r.get("setting") for r in lines):
        own = {arm: {r["seed"]: r for r in lines if r.get("setting") == setting and r.get("arm") == arm}
               for arm in (a[2], b[2])}
        seeds = sorted(set(own[a[2]]) & set(own[b[2]]))
        if seeds:
            out.append((setting, compare([sub(own[a[2]][k], "metrics").get("BLEU") for k in seeds],
                                         [sub(own[b[2]][k], "metrics").get("BLEU") for k in seeds])))
    return out


def _decoding_context(res: Results, a: tuple[str, str, str], b: tuple[str, str, str]) -> list[str]:
    """Context for an E2E claim, not part of its rule: BLEU of the two arms under each decoding-check setting."""
    return [f"BLEU decoded with `{setting}` (decoding check, context) {a[2]} {rule.a.text()} vs {b[2]} "
            f"{rule.b.text()}: {rule.text()}" for setting, rule in _decoding_comparisons(res, a, b)]


def _decoding_caveat(res: Results, a: tuple[str, str, str], b: tuple[str, str, str], greedy: Comparison) -> str:
    """A clause for a verdict's reason where a decoding-check setting (≥ 2 seeds a side) reaches another outcome
    than the greedy comparison the rule uses: the verdict stands, but it depends on the decoding."""
    other = [f"with `{setting}` BLEU is {'a tie' if rule.outcome == 'tie' else rule.outcome} (d = {rule.d:+.4f}, "
             f"u = {rule.u:.4f}, n={rule.a.n}/{rule.b.n})" for setting, rule in _decoding_comparisons(res, a, b)
             if rule.outcome not in ("insufficient", greedy.outcome)]
    return ("; decoded again, " + "; ".join(other) + ": this E2E result depends on the decoding") if other else ""


def verdict_solo(res: Results, protocol: str = "e2e-mini") -> Verdict:
    claim = CLAIMS["a"]
    cells = [(protocol, "e2e", "solo-r4"), (protocol, "e2e", "lora")]
    done, total = res.progress(cells)
    solo, lora = res.values(*cells[0], "BLEU"), res.values(*cells[1], "BLEU")
    if total == 0 or not solo or not lora:
        return _not_run(claim, done, total)
    main = compare(solo, lora)
    ta, tb = res.field(*cells[0], "trainable_params").mean, res.field(*cells[1], "trainable_params").mean
    ratio = ta / tb if ta is not None and tb else None
    wins = sum(compare(res.values(*cells[0], m), res.values(*cells[1], m)).outcome == "better" for m in E2E_METRICS)
    default = compare(res.values(protocol, "e2e", "solo", "BLEU"), lora)
    parts = [f"BLEU solo-r4 {main.a.text()} vs lora {main.b.text()}: {main.text()}",
             f"trainable {ta:,.0f} vs {tb:,.0f} = {ratio:.2f}× LoRA" if ratio is not None else "trainable: unknown",
             f"solo-r4 better on {wins} of 5 metrics"]
    if default.a.n:
        parts.append(f"default solo BLEU {default.a.text()}: {default.text()}")
    parts.append(_dev_loss_context(res, cells[0], cells[1]))
    parts += _decoding_context(res, cells[0], cells[1])
    parts.append(f"budget ({protocol}): {res.budget(protocol)}")
    measured = "; ".join(parts)
    if main.outcome == "insufficient":
        return _final(claim, measured, "inconclusive", "fewer than 2 seeds", done, total)
    if ratio is None or ratio > SOLO_RATIO:
        return _final(claim, measured, "inconclusive",
                      f"solo-r4 does not train ≤ {SOLO_RATIO}× LoRA's parameters, so '59% fewer' is not tested",
                      done, total)
    if main.outcome == "better":
        return _final(claim, measured, "holds", f"solo-r4 beats LoRA on BLEU by {main.d:.4f} (> u)"
                      + _decoding_caveat(res, *cells, main), done, total)
    if main.outcome == "worse":
        return _final(claim, measured, "does not hold",
                      f"Solo (rank 4) loses to LoRA on BLEU by {-main.d:.4f} (> u {main.u:.4f})"
                      + _decoding_caveat(res, *cells, main), done, total)
    if main.a.n >= 3 and main.b.n >= 3:
        return _final(claim, measured, "does not hold", "a tie: |d| ≤ u with ≥ 3 seeds each", done, total,
                      label="does not hold (no measurable gain)")
    return _final(claim, measured, "inconclusive", "a tie with fewer than 3 seeds on a side", done, total)


def verdict_kernel_mix(res: Results, nlg: str = "e2e-mini", nlu: str = "glue-mini") -> Verdict:
    claim = CLAIMS["b"]
    tasks = [(nlg, "e2e")] + [(nlu, t) for t in res.tasks(nlu)]
    cells = [(p, t, arm) for p, t in tasks for arm in ("kernel-mix", "lora")]
    done, total = res.progress(cells)
    comparisons = {}
    for p, t in tasks:
        name = headline(t)
        comparisons[(p, t)] = (name, compare(res.values(p, t, "kernel-mix", name), res.values(p, t, "lora", name)))
    if total == 0 or all(c.d is None for _, c in comparisons.values()):
        return _not_run(claim, done, total)
    parts = [f"{t} {name}: kernel-mix {c.a.text()} vs lora {c.b.text()}, {c.text()}"
             for (p, t), (name, c) in comparisons.items() if c.d is not None]
    if comparisons[(nlg, "e2e")][1].d is not None:
        parts.append(_dev_loss_context(res, (nlg, "e2e", "kernel-mix"), (nlg, "e2e", "lora")))
        parts += _decoding_context(res, (nlg, "e2e", "kernel-mix"), (nlg, "e2e", "lora"))
    authors = compare(res.values(nlg, "e2e", "kernel-mix-authors", "BLEU"), res.values(nlg, "e2e", "lora", "BLEU"))
    if authors.a.n:
        parts.append(f"authors' preset (kernel-mix-authors) BLEU {authors.a.text()}: {authors.text()}")
    parts.append(f"budget ({nlg}): {res.budget(nlg)}; ({nlu}): {res.budget(nlu)}")
    measured = "; ".join(parts)
    worse = [f"{t} {name} by {-c.d:.4f}" for (p, t), (name, c) in comparisons.items() if c.outcome == "worse"]
    e2e = comparisons[(nlg, "e2e")][1]
    caveat = _decoding_caveat(res, (nlg, "e2e", "kernel-mix"), (nlg, "e2e", "lora"), e2e) if e2e.d is not None else ""
    if worse:
        return _final(claim, measured, "does not hold", "Kernel-mix (matched) loses to LoRA on " + ", ".join(worse)
                      + caveat, done, total)
    measured_tasks = [t for (p, t), (_, c) in comparisons.items() if c.outcome != "insufficient"]
    if "e2e" in measured_tasks and len(measured_tasks) >= 2:
        return _final(claim, measured, "holds", "not worse than LoRA on any measured task (" +
                      ", ".join(measured_tasks) + ")" + caveat, done, total)
    return _final(claim, measured, "inconclusive", "needs E2E and ≥ 1 GLUE task with ≥ 2 seeds on both arms; "
                  f"measured: {', '.join(measured_tasks) or 'none'}", done, total)


def _length_stats(res: Results, protocol: str, task: str, variant: str) -> dict[int, Stat]:
    """{length: seed values of the headline metric} of one prefix-length variant."""
    out = {}
    for length in res.lengths(protocol):
        arm = res.prefix_arm(protocol, task, variant, length)
        out[length] = stat(res.values(protocol, task, arm, headline(task)) if arm else [])
    return out


def spread(stats: dict[int, Stat]) -> float | None:
    means = [s.mean for s in stats.values() if s.mean is not None]
    return max(means) - min(means) if means else None


def _prefix_cells(res: Results, protocol: str, task: str, variants: Sequence[str]) -> list[tuple[str, str, str]]:
    return [(protocol, task, arm) for v in variants for L in res.lengths(protocol)
            if (arm := res.prefix_arm(protocol, task, v, L))]


def verdict_stability(res: Results, protocol: str = "prefix-length") -> Verdict:
    claim = CLAIMS["c1"]
    tasks = res.tasks(protocol)
    task = tasks[0] if tasks else "sst2"
    done, total = res.progress(_prefix_cells(res, protocol, task, ("plain", "residual+gate")))
    stats = {v: _length_stats(res, protocol, task, v) for v in PREFIX_VARIANTS}
    if total == 0 or not any(s.n for v in ("plain", "residual+gate") for s in stats[v].values()):
        return _not_run(claim, done, total)
    plain_std = [s.std for s in stats["plain"].values()]
    noise = statistics.fmean(plain_std) if plain_std and all(x is not None for x in plain_std) else None
    parts = [f"{task} {headline(task)} spread over l ∈ {{{', '.join(map(str, res.lengths(protocol)))}}}: " +
             ", ".join(f"{v} {fmt(spread(stats[v]))}" for v in PREFIX_VARIANTS if spread(stats[v]) is not None),
             f"seed noise s = {fmt(noise)}", f"budget ({protocol}): {res.budget(protocol)}"]
    measured = "; ".join(parts)
    short = [f"{v}@{L}" for v in ("plain", "residual+gate") for L, s in stats[v].items() if s.n < 2]
    if short or noise is None:
        return _final(claim, measured, "inconclusive", "fewer than 2 seeds at " + ", ".join(short or ["some length"]),
                      done, total)
    rg, pl = spread(stats["residual+gate"]), spread(stats["plain"])
    if rg < pl - noise:
        return _final(claim, measured, "holds", f"spread {rg:.4f} (residual+gate) < {pl:.4f} (plain) − s",
                      done, total)
    if rg > pl + noise:
        return _final(claim, measured, "does not hold",
                      f"residual+gate varies more across lengths than plain prefix: {rg:.4f} > {pl:.4f} + s",
                      done, total)
    return _final(claim, measured, "inconclusive",
                  f"spreads {rg:.4f} vs {pl:.4f} differ by less than the seed noise s = {noise:.4f}", done, total)


def convergence_steps(res: Results, protocol: str, task: str, variant: str, lengths: Iterable[int]) -> list[int]:
    """Per-run convergence steps of a variant at the given lengths (runs whose curve has no value skipped)."""
    out = []
    for length in lengths:
        arm = res.prefix_arm(protocol, task, variant, length)
        for record in res.get(protocol, task, arm) if arm else []:
            step = convergence_step(curve(record, "dev"), lower_is_better=task == "e2e")
            if step is not None:
                out.append(step)
    return out


def _steps_compare(res: Results, protocol: str, task: str, a: str, b: str) -> Comparison:
    both = [L for L in res.lengths(protocol) if all(res.get(protocol, task, res.prefix_arm(protocol, task, v, L) or "")
                                                    for v in (a, b))]
    return compare(convergence_steps(res, protocol, task, a, both), convergence_steps(res, protocol, task, b, both),
                   higher_is_better=False)


def verdict_convergence(res: Results, protocol: str = "prefix-length") -> Verdict:
    claim = CLAIMS["c2"]
    tasks = res.tasks(protocol)
    task = tasks[0] if tasks else "sst2"
    done, total = res.progress(_prefix_cells(res, protocol, task, ("plain", "residual")))
    main = _steps_compare(res, protocol, task, "residual", "plain")
    if total == 0 or main.d is None:
        return _not_run(claim, done, total)
    extra = _steps_compare(res, protocol, task, "residual+gate", "gate")
    measured = (f"steps to 95% of the final dev {headline(task)}: residual {main.a.text(0)} vs plain "
                f"{main.b.text(0)}, {main.text(0)} (fewer is better)")
    if extra.d is not None:
        measured += f"; residual+gate {extra.a.text(0)} vs gate {extra.b.text(0)}, {extra.text(0)}"
    measured += f"; budget ({protocol}): {res.budget(protocol)}"
    if main.outcome == "insufficient":
        return _final(claim, measured, "inconclusive", "fewer than 2 seeds", done, total)
    if main.outcome == "better":
        return _final(claim, measured, "holds", f"residual needs {main.d:.0f} fewer steps (> u {main.u:.0f})",
                      done, total)
    if main.outcome == "worse":
        return _final(claim, measured, "does not hold",
                      f"the residual converges slower than plain prefix by {-main.d:.0f} steps (> u {main.u:.0f})",
                      done, total)
    return _final(claim, measured, "inconclusive", "step counts tie within u", done, total)


def long_lengths(lengths: Sequence[int]) -> list[int]:
    longs = [L for L in lengths if L in (50, 100)]
    return longs or sorted(lengths)[-2:]


def verdict_best(res: Results, protocol: str = "prefix-length", e2e: str = "e2e-mini") -> Verdict:
    claim = CLAIMS["c3"]
    tasks = res.tasks(protocol)
    task = tasks[0] if tasks else "sst2"
    done, total = res.progress(_prefix_cells(res, protocol, task, PREFIX_VARIANTS))
    stats = {v: _length_stats(res, protocol, task, v) for v in PREFIX_VARIANTS}
    if total == 0 or not any(s.n for v in PREFIX_VARIANTS for s in stats[v].values()):
        return _not_run(claim, done, total)
    overall = {v: statistics.fmean([s.mean for s in st.values()]) for v, st in stats.items()
               if st and all(s.n for s in st.values())}
    parts = []
    if overall:
        ranking = sorted(overall, key=lambda v: -overall[v])
        parts.append(f"mean {headline(task)} over all lengths: " + ", ".join(f"{v} {fmt(overall[v])}" for v in ranking))
    outcomes = []
    for length in long_lengths(res.lengths(protocol)):
        rg = stats["residual+gate"].get(length, Stat(()))
        for other in PREFIX_VARIANTS[:3]:
            c = compare(rg.values, stats[other].get(length, Stat(())).values)
            outcomes.append((length, other, c))
        parts.append(f"l={length}: residual+gate {rg.text()} vs " + ", ".join(
            f"{o} {c.b.text()} ({c.outcome})" for L, o, c in outcomes if L == length))
    extra = compare(res.values(e2e, "e2e", "gated-prefix", "BLEU"), res.values(e2e, "e2e", "prefix", "BLEU"))
    if extra.d is not None:
        parts.append(f"e2e-mini BLEU gated-prefix {extra.a.text()} vs prefix {extra.b.text()}: {extra.text()}")
    parts.append(f"budget ({protocol}): {res.budget(protocol)}")
    measured = "; ".join(parts)
    worse = [f"{o}@{L}" for L, o, c in outcomes if c.outcome == "worse"]
    if worse:
        return _final(claim, measured, "does not hold", "residual+gate loses to " + ", ".join(worse), done, total)
    if outcomes and all(c.outcome == "better" for _, _, c in outcomes):
        return _final(claim, measured, "holds", "residual+gate beats every other variant at the long lengths",
                      done, total)
    short = [f"{o}@{L}" for L, o, c in outcomes if c.outcome == "insufficient"]
    reason = (f"fewer than 2 seeds vs {', '.join(short)}" if short
              else "ties at the long lengths: " + ", ".join(f"{o}@{L}" for L, o, c in outcomes if c.outcome == "tie"))
    return _final(claim, measured, "inconclusive", reason, done, total)


def all_verdicts(res: Results) -> list[Verdict]:
    return [verdict_solo(res), verdict_kernel_mix(res), verdict_stability(res), verdict_convergence(res),
            verdict_best(res)]


SEED_COMPARISONS = (("solo", "lora"), ("solo-r4", "lora"), ("kernel-mix", "lora"), ("kernel-mix-authors", "lora"),
                    ("gated-prefix", "lora"), ("gated-prefix", "prefix"))


def seed_method_losses(res: Results, protocols: Sequence[str] = ("e2e-mini", "glue-mini")) -> list[str]:
    """Every measured comparison (headline metric) where a seed method is worse than its reference, one line each."""
    out = []
    for protocol in protocols:
        for task in res.tasks(protocol):
            name = headline(task)
            for arm, ref in SEED_COMPARISONS:
                c = compare(res.values(protocol, task, arm, name), res.values(protocol, task, ref, name))
                if c.outcome == "worse":
                    out.append(f"{protocol} {task}: {arm} {c.a.text()} loses to {ref} {c.b.text()} on {name} "
                               f"(d = {c.d:+.4f}, u = {c.u:.4f})")
    return out

