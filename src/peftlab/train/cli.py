"""`peftlab train TASK ...`: run a recipe with key=value overrides."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .recipe import apply_overrides, load_recipe_dict, recipe_from_dict, recipe_help

DEFAULT_MODELS = {"e2e": "smollm2-135m", "glue": "minilm-l6"}


RECIPES_PACKAGE_DIR = Path(__file__).resolve().parents[1] / "recipes"
"""The recipes shipped inside the package (``peftlab/recipes/<task>/<model>/<method>.yaml``)."""


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up: ./recipes (your own, e.g. made with `peftlab recipes cp`), then the shipped
    ones inside the package."""
    return [Path.cwd() / "recipes", RECIPES_PACKAGE_DIR]


def find_recipe(task: str, model: str, method: str) -> Path | None:
    for root in recipe_dirs():
        path = root / task / model / f"{method}.yaml"
        if path.is_file():
            return path
    return None


def shipped_recipes() -> list[str]:
    """Names (``task/model/method``) of every recipe found, yours first, each once."""
    names: list[str] = []
    for root in recipe_dirs():
        for path in sorted(root.glob("*/*/*.yaml")):
            name = path.relative_to(root).with_suffix("").as_posix()
            if name not in names:
                names.append(name)
    return names


def _missing_recipe(task: str, model: str, method: str) -> ConfigError:
    near = [n for n in shipped_recipes() if n.startswith(f"{task}/{model}/")] or \
           [n for n in shipped_recipes() if n.startswith(f"{task}/") and n.endswith(f"/{method}")]
    listing = ", ".join(near) or ", ".join(shipped_recipes())
    return ConfigError(f"no recipe {task}/{model}/{method}.yaml in {' or '.join(str(d) for d in recipe_dirs())}; "
                       f"recipes there: {listing}. Pass --recipe FILE, or --recipe defaults for the built-in "
                       "defaults (`peftlab recipes cp NAME DIR` copies one to edit)")


def resolve_recipe(args: argparse.Namespace):
    model = args.model or DEFAULT_MODELS[args.task]
    method = args.method or "lora"
    if args.recipe == "defaults":
        path = None
    elif args.recipe:
        path = Path(args.recipe)
    else:
        from .methods import build_method_config

        build_method_config(method, {}, "SEQ_CLS" if args.task == "glue" else "CAUSAL_LM")  # a known method?
        path = find_recipe(args.task, model, method)
        if path is None:
            raise _missing_recipe(args.task, model, method)
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
    if args.pack:
        overrides.append("data.pack_per_row=2")
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
    if args.print_config:
        import yaml

        print(f"# resolved from {path or 'built-in defaults'} and the overrides")
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
        return 0
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
        "train", help="fine-tune with a recipe (<task>/<model>/<method>, `peftlab recipes ls`) and key=value overrides",
        description="Train, select the best step on dev, evaluate, and write a run folder. Recipe keys: "
                    "`peftlab train --help-recipe`.")
    parser.add_argument("task", nargs="?", choices=["e2e", "glue"], help="e2e (NLG) or glue")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.lr=1e-3")
    parser.add_argument("--recipe", help="recipe YAML, or 'defaults' for the built-in defaults (default: the recipe "
                                         "<task>/<model>/<method>, see `peftlab recipes ls`)")
    parser.add_argument("--model", help="zoo name, folder or hub id (default: smollm2-135m / minilm-l6)")
    parser.add_argument("--method", help="method name (--list-methods)")
    parser.add_argument("--task", dest="glue_task", help="GLUE task (sst2, mrpc, cola, rte, stsb, wnli, qnli)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (overrides epochs)")
    parser.add_argument("--eval-limit", type=int, help="evaluate on only this many inputs")
    parser.add_argument("--train-limit", type=int, help="train on only this many examples")
    parser.add_argument("--output-dir", help="run folder")
    parser.add_argument("--data-dir", help="folder holding e2e/ and glue/ (default: $PEFTLAB_DATA_DIR)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (run.bf16=true); run.bf16=auto chooses bf16 only where this "
                        "machine multiplies bf16 natively (else fp32: emulated bf16 is several times slower)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every block (run.compile=true)")
    parser.add_argument("--pack", action="store_true",
                        help="E2E: pack two examples to a row, each attending only to itself (data.pack_per_row=2)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list-methods", action="store_true", help="list method names and exit")
    parser.add_argument("--help-recipe", action="store_true", help="list every recipe key with its help and exit")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved recipe (after overrides) as YAML and exit")
    parser.set_defaults(func=_run)
    _register_predict(subparsers)
    _register_recipes(subparsers)


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    overrides = list(args.overrides)
    for key, value in (("data.eval_limit", args.eval_limit), ("data.data_dir", args.data_dir)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.bf16:
        overrides.append("run.bf16=true")
    metrics = predict(args.run_dir, overrides, output_dir=args.output_dir, overwrite=args.overwrite,
                      progress=not args.no_progress)
    shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
    print("[predict] " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    return 0


def _register_predict(subparsers) -> None:
    from .predict import PREDICT_KEYS

    parser = subparsers.add_parser(
        "predict", help="evaluate a finished run again from its adapter, with other decoding settings (beam search, "
                        "another part of the test set), without training",
        description="Rebuild a finished `peftlab train` run's model from its config.yaml and adapter/, run its "
                    "task's final evaluation (E2E: decode the test MRs and score them; GLUE: predict and score the dev "
                    "set) and write predictions.txt, metrics.json, meta.json and config.yaml to a new folder. "
                    "Overridable keys: " + ", ".join(k + "*" if k.endswith(".") else k for k in PREDICT_KEYS) +
                    " (`peftlab train --help-recipe` explains them).")
    parser.add_argument("run_dir", help="the run folder (a `peftlab train` --output-dir)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="e.g. decode.num_beams=10 decode.length_penalty=0.9 decode.no_repeat_ngram_size=4")
    parser.add_argument("--output-dir", help="where the results go (default: RUN_DIR/predict-<the overrides>)")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first this many inputs (data.eval_limit)")
    parser.add_argument("--data-dir", help="folder holding e2e/ and glue/ (default: the run's, else "
                                           "$PEFTLAB_DATA_DIR)")
    parser.add_argument("--bf16", action="store_true", help="bf16 frozen weights (run.bf16=true), whatever the run had")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_predict)


def _recipes_ls(args: argparse.Namespace) -> int:
    names = [n for n in shipped_recipes() if not args.task or n.startswith(args.task + "/")]
    for name in names:
        task, model, method = name.split("/")
        print(f"{name:40s} peftlab train {task} --model {model} --method {method}")
    return 0


def _recipes_cp(args: argparse.Namespace) -> int:
    """Copy recipe NAME to DEST (a .yaml file, or a folder: DEST/NAME.yaml, the layout `peftlab train` looks up)."""
    import shutil

    name = args.name[:-5] if args.name.endswith(".yaml") else args.name
    parts = name.split("/")
    source = find_recipe(*parts) if len(parts) == 3 else None
    if source is None:
        raise ConfigError(f"no recipe named {args.name!r}; `peftlab recipes ls` lists them (task/model/method)")
    dest = Path(args.dest)
    target = dest if dest.suffix in (".yaml", ".yml") else dest / f"{name}.yaml"
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(f"[recipes] {name} -> {target}")
    return 0


def _register_recipes(subparsers) -> None:
    recipes = subparsers.add_parser("recipes", help="list shipped recipes or copy one to edit (like torchtune's tune "
                                                    "ls / tune cp)")
    actions = recipes.add_subparsers(dest="recipes_action", metavar="ACTION")
    ls = actions.add_parser("ls", help="list recipes (task/model/method) and the command that runs each")
    ls.add_argument("--task", choices=["e2e", "glue"], help="only this task")
    ls.set_defaults(func=_recipes_ls)
    cp = actions.add_parser("cp", help="copy a recipe to a file or folder (a folder gets <dest>/<task>/<model>/"
                                       "<method>.yaml, which `peftlab train` run from <dest>'s parent finds as "
                                       "./recipes if <dest> is named recipes)")
    cp.add_argument("name", help="task/model/method, e.g. e2e/smollm2-135m/lora")
    cp.add_argument("dest", help="a .yaml file, or a folder")
    cp.add_argument("--force", action="store_true", help="replace an existing file")
    cp.set_defaults(func=_recipes_cp)
    recipes.set_defaults(func=lambda args: (recipes.print_help(), 2)[1])
