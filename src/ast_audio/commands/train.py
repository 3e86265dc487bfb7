"""`ast-audio train`: fine-tune or train AST with a config file (or a shipped recipe) and overrides."""

from __future__ import annotations

import argparse
import json

from ast_audio.training.config import shipped_recipes

_RECIPES = ", ".join(shipped_recipes())  # listed from the package's recipes folder, so --help never goes stale
HELP = f"train or fine-tune AST with a YAML/JSON config or a shipped recipe ({_RECIPES})"
DESCRIPTION = (
    f"Train or fine-tune AST. CONFIG is a YAML/JSON file or a shipped recipe name ({_RECIPES}; scratch_small "
    "trains from random weights on a small dataset, the others start from pretrained weights); flags and --set "
    "key=value override it. Data: a folder with one sub-folder per class (at least two classes), a release JSON "
    "manifest ({'data': [{'wav', 'labels'}]}, with --labels-csv), or a CSV (path,label[,label...]). The output "
    "directory gets best/, final/ (and averaged/) checkpoints that classify and evaluate load, metrics.csv per "
    "epoch, results.json (metrics; null where undefined), and last.pt to resume from. Runs under torchrun "
    "--nproc-per-node N unchanged. Unreadable clips are skipped with a warning each. Exit code 0: done (a rerun "
    "of a finished run says it is complete); 1: an error (e.g. data of one class, a checkpoint that cannot be "
    "read); 2: a usage error, a setting that cannot work (an output directory that is a file, last.pt written "
    "with other settings; found before training starts); 130: stopped by Ctrl-C or SIGTERM at a step's end, "
    "resumable."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML/JSON config file or recipe name (default: scratch_small "
                        "when training from scratch, else the release's fine-tuning settings)")
    parser.add_argument("--train", help="training data (folder, JSON manifest or CSV)")
    parser.add_argument("--validation", help="validation data (default: a seeded share of the training data)")
    parser.add_argument("--test", help="test data, evaluated once at the end")
    parser.add_argument("--labels-csv", help="class_labels_indices.csv for manifests that name labels by mid")
    parser.add_argument("--init", help="'scratch', an AST checkpoint dir / Hub id, or timm:PATH")
    parser.add_argument("--output-dir", "-o", help="run directory (default runs/ast)")
    parser.add_argument("--epochs", type=int, help="run exactly this many epochs (without it, a recipe's min_steps "
                        "may raise its epochs on small data)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set mixup=0.5 --set model.hidden_size=192")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start over even if the output directory holds last.pt")
    parser.add_argument("--stats", metavar="JSON", help="mean and std from the JSON that `ast-audio stats` writes")
    parser.add_argument("--threads", type=int, help="intra-op threads of the training process (default: the "
                        "machine's cores less one per DataLoader worker)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    parser.add_argument("--quiet", "-q", action="store_true", help="no epoch lines (errors and the summary only)")


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    from ast_audio.errors import ConfigError, UsageError
    from ast_audio.runtime import available_cores
    from ast_audio.training.metrics import json_safe

    # One line per epoch on stderr by default (-v adds the details, -q keeps only warnings).
    logging.getLogger("ast_audio.training").setLevel(logging.WARNING if args.quiet else logging.INFO)
    from ast_audio.jobs.output import check_output_folder

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: expected a whole number >= 1")
    try:  # the configuration is what the command line names: a setting that cannot work is a usage error (exit 2)
        config, recipe = _configuration(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    check_output_folder(config.output_dir)  # a file there, or on the way: one line before any work
    # DataLoader workers run one thread each: the training process takes the remaining cores.
    torch.set_num_threads(args.threads or max(1, available_cores() - config.num_workers))
    from ast_audio.training.trainer import Trainer

    trainer = Trainer(config, provenance={"command_line": args.command_line, "recipe": recipe})
    results = trainer.train(resume=args.resume)
    if trainer.dist.main:
        summary = {k: v for k, v in results.items() if k not in ("validation", "test")}
        for split in ("validation", "test"):
            if split in results:
                summary[split] = {k: results[split][k] for k in ("accuracy", "mAP", "mAUC", "d_prime")}
        print(json.dumps(json_safe(summary), indent=2, allow_nan=False))
    return 0


def _configuration(args: argparse.Namespace):
    """The training configuration (`TrainConfig`) the command line gives and the recipe or file it starts from;
    raises `ConfigError` for a setting that cannot work."""
    import logging

    from ast_audio.training.config import default_recipe, load_train_config, parse_overrides, read_stats

    overrides = parse_overrides(args.set)
    for flag in ("train", "validation", "test", "labels_csv", "init", "output_dir", "epochs", "lr", "batch_size",
                 "device"):
        value = getattr(args, flag)
        if value is not None:
            overrides[flag] = value
    if args.stats:
        overrides.update(read_stats(args.stats))
    if "epochs" in overrides:  # a length the user chose: the recipe's min_steps does not stretch it
        overrides.setdefault("min_steps", 0)
    recipe = args.config or default_recipe(overrides.get("init"))
    if recipe != args.config:
        logging.getLogger("ast_audio.training").info("no config given: training from scratch with the %s recipe",
                                                    recipe)
    return load_train_config(recipe, overrides), recipe
