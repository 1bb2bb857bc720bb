"""The `report` and `export` subcommands (registered by cli.py through `add_commands`)."""

from __future__ import annotations

import argparse


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of one or more runs and print where it went."""
    from .report import build_report
    rep = build_report(args.run_dirs, args.out, ensemble_across=not args.no_ensemble,
                       device=args.device)
    print(rep.summary)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's final model or snapshot ensemble and print where it went."""
    from .export import INPUT, OUTPUT, export_run
    from .members import pick
    model = pick(args.run_dir, args.model, args.member, args.ensemble)
    path = export_run(args.run_dir, args.format, model=model, ensemble=args.ensemble,
                      out=args.out, force=args.force)
    what = (f"{args.ensemble} ensemble" if args.ensemble else
            f"model {model} (front member {args.member})" if args.member else
            f"model {model}" if model else "the run's model")
    print(f"exported {what} of {args.run_dir} as {args.format} to {path} "
          f"(input: {INPUT}; output: {OUTPUT})")
    return 0


def add_commands(sub) -> None:
    """Add `report` and `export` to the `morphclimb` subparsers."""
    p = sub.add_parser("report", help="HTML report with figures and tables of one or more runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="output folder (default RUN_DIR/report for one run, ./report "
                   "for several)")
    p.add_argument("--no-ensemble", action="store_true", help="do not evaluate the ensemble "
                   "across runs (done by default when several finished runs share a dataset)")
    p.add_argument("--device", default="cpu", help="device for that evaluation (default cpu)")
    p.set_defaults(handler=cmd_report)
    p = sub.add_parser("export", help="export the final model (or snapshot ensemble) for "
                       "inference on raw uint8 images (N, H, W, C)", description="Export the "
                       "run's model (or snapshot ensemble) for inference on raw uint8 images "
                       "(N, H, W, C); it normalises them itself with the mean/std the run "
                       "recorded when it started (the run's dataset is not needed).")
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "safetensors"],
                   help="the output format (onnx needs pip install 'morphclimb[export]')")
    p.add_argument("--model", help="model id in the run (default: the run's model, final; retrain with "
                   "final_model=retrain)")
    p.add_argument("--member", metavar="ID", help="a Pareto search's front member (`show` lists "
                   "them): its final training, final or final-ID (not with --model or --ensemble)")
    p.add_argument("--ensemble", choices=["snapshot"], help="export the snapshot ensemble "
                   "(probabilities averaged over its members) instead of one model")
    p.add_argument("--out", help="output file (a folder for safetensors; default "
                   "RUN_DIR/export/<model>.onnx|.pt|/); an existing one is kept")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(handler=cmd_export)
