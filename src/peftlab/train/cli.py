"""`peftlab train TASK ...`: run a recipe with key=value overrides."""
from __future__ import annotations

import argparse
from pathlib import Path

from .recipe import apply_overrides, load_recipe_dict, recipe_from_dict, recipe_help

DEFAULT_MODELS = {"e2e": "smollm2-135m", "glue": "minilm-l6"}


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: ./recipes, then the repository's recipes/ folder."""
    return [Path.cwd() / "recipes", Path(__file__).resolve().parents[3] / "recipes"]


def find_recipe(task: str, model: str, method: str) -> Path | None:
    for root in recipe_dirs():
        path = root / task / model / f"{method}.yaml"
        if path.is_file():
            return path
    return None


def resolve_recipe(args: argparse.Namespace):
    model = args.model or DEFAULT_MODELS[args.task]
    method = args.method or "lora"
    path = Path(args.recipe) if args.recipe else find_recipe(args.task, model, method)
    data = load_recipe_dict(path) if path else {"task": args.task, "method": method}
    shortcuts = [("task", args.task), ("method", args.method), ("model.name", args.model),
                 ("data.glue_task", args.glue_task), ("optim.max_steps", args.max_steps),
                 ("data.eval_limit", args.eval_limit), ("data.train_limit", args.train_limit),
                 ("run.output_dir", args.output_dir), ("run.seed", args.seed), ("data.data_dir", args.data_dir)]
    overrides = [f"{key}={value}" for key, value in shortcuts if value is not None]
    if args.bf16:
        overrides.append("run.bf16=true")
    if args.compile:
        overrides.append("run.compile=true")
    data = apply_overrides(data, overrides + list(args.overrides))
    return recipe_from_dict(data, source=str(path) if path else "recipe"), path


def _run(args: argparse.Namespace) -> int:
    from .methods import available_methods

    if args.list_methods:
        print("\n".join(available_methods()))
        return 0
    if args.help_recipe:
        print(recipe_help())
        return 0
    if not args.task:
        raise SystemExit("peftlab train: give a task (e2e or glue); see --help")
    recipe, path = resolve_recipe(args)
    print(f"[train] recipe: {path or 'built-in defaults'}; method {recipe.method}; model {recipe.model.name}; "
          f"output {recipe.run.output_dir}")
    from .loop import train

    metrics = train(recipe, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if metrics:
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        print("[train] " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in shown.items()))
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune with a recipe (recipes/<task>/<model>/<method>.yaml) and key=value overrides",
        description="Train, select the best step on dev, evaluate, and write a run folder. Recipe keys: "
                    "`peftlab train --help-recipe`.")
    parser.add_argument("task", nargs="?", choices=["e2e", "glue"], help="e2e (NLG) or glue")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.lr=1e-3")
    parser.add_argument("--recipe", help="recipe YAML (default: recipes/<task>/<model>/<method>.yaml if present)")
    parser.add_argument("--model", help="zoo name, folder or hub id (default: smollm2-135m / minilm-l6)")
    parser.add_argument("--method", help="method name (--list-methods)")
    parser.add_argument("--task", dest="glue_task", help="GLUE task (sst2, mrpc, cola, rte, stsb, wnli, qnli)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides epochs)")
    parser.add_argument("--eval-limit", type=int, help="evaluate on only this many inputs")
    parser.add_argument("--train-limit", type=int, help="train on only this many examples")
    parser.add_argument("--output-dir", help="run folder")
    parser.add_argument("--data-dir", help="folder holding e2e/ and glue/ (default: $PEFTLAB_DATA_DIR)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (run.bf16=true)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every block (run.compile=true)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list-methods", action="store_true", help="list method names and exit")
    parser.add_argument("--help-recipe", action="store_true", help="list every recipe key with its help and exit")
    parser.set_defaults(func=_run)
