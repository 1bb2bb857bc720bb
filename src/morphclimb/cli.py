"""The `morphclimb` command (the only module, with cli_progress, that prints)."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from . import __version__
from .errors import MorphclimbError, RunDirError, TrainingError


def _search_args(p: argparse.ArgumentParser) -> None:
    from .config import FIELDS, PRESET_HELP
    presets = "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items())
    p.add_argument("--preset", default="demo", help=f"named settings (default demo). {presets}")
    p.add_argument("--dataset", help="mini-cifar10 (bundled, default), cifar10, cifar100, a "
                   "folder tree (train/<class>/*, test/<class>/*) or an .npz file")
    p.add_argument("--data-root", help="where cifar10/cifar100 files live or are downloaded")
    p.add_argument("--config", help="JSON file of config keys (applied after the preset)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set n_steps=3 (repeatable; keys in "
                   "any case: n_NM is n_nm); keys: "
                   + ", ".join(FIELDS))
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument("--start", metavar="RUN_DIR|ARCH_JSON|NAME", help="climb from another "
                   "run's final network (with its weights), from an architecture file such as "
                   "`show --arch`/`export` write, or from a known-good network by name "
                   "(resnet8, resnet20, resnet32, resnet56, resnet20x4: CIFAR ResNets, any "
                   "resnet<6n+2>[x<width>]; pretrained epoch_pretrain epochs), instead of the "
                   "paper's model_0")
    p.add_argument("--start-weights", metavar="SAFETENSORS", help="weights for --start "
                   "ARCH_JSON (without them it starts from fresh weights, pretrained)")
    p.add_argument("--start-member", metavar="ID", help="with --start RUN_DIR: start from "
                   "that run's front member ID (its final training when it had one, else its "
                   "search-time weights) or from any model ID of the run (config key "
                   "start_model)")
    p.add_argument("--out", help="run directory (default runs/<dataset>-<time>-s<seed>)")
    p.add_argument("--tensorboard", action="store_true",
                   help="log training curves to RUN_DIR/tensorboard (needs "
                   "pip install 'morphclimb[tensorboard]')")
    _exec_args(p)


def _exec_args(p: argparse.ArgumentParser) -> None:
    from .config import EXECUTORS
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--executor", choices=list(EXECUTORS),
                   help="where children train: auto (default: streams on CUDA, serial "
                   "elsewhere), serial, local worker processes, ray (pip install "
                   "'morphclimb[ray]'), streams (threads in this process, one CUDA stream "
                   "each)")
    p.add_argument("--workers", type=int, help="parallel workers for local/ray executors")
    p.add_argument("--ray-address", help="address of an existing Ray cluster (default: local)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the final result")


def parser() -> argparse.ArgumentParser:
    """The argument parser of the `morphclimb` command."""
    ap = argparse.ArgumentParser(prog="morphclimb", description="Neural architecture search "
                                 "by hill climbing with network morphisms (NASH).")
    ap.add_argument("--version", action="version", version=f"morphclimb {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    _search_args(sub.add_parser("search", help="run a search (no options: the demo on the "
                                "bundled mini CIFAR-10)"))
    p = sub.add_parser("resume", help="continue a killed search from its run directory "
                       "(a checkpoint it needs that vanished is trained again, journaled)")
    p.add_argument("run_dir")
    p.add_argument("--retry-failed", action="store_true", help="train again the failed "
                   "trainings of steps not yet decided and of the jobs after the climb "
                   "(journaled; the way forward when every candidate of a step failed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a training setting for the trainings still to come, or which "
                   "jobs run after the climb (journaled), e.g. --set lr_start=0.01, --set "
                   "reference=null; keys: " + ", ".join(_resume_keys()))
    _exec_args(p)
    p = sub.add_parser("retrain", help="retrain the found architecture from scratch (Table 2)")
    p.add_argument("run_dir")
    p.add_argument("--member", metavar="ID", help="a Pareto search's front member: retrain its "
                   "architecture instead, for as many epochs as its final training had (model "
                   "retrain-ID; retrain for the most accurate member)")
    _exec_args(p)
    p = sub.add_parser("reference", help="train a known-good network alone for the search's "
                       "wall time (the equal-time reference; one a time budget skipped)",
                       description="The equal-time reference of a finished run: a CIFAR "
                       "ResNet in morphclimb's spec trained alone, by the run's trainer, for "
                       "as many epochs as fit in the time the search took to its answer "
                       "(journaled as the run's `reference`; results.json, show and the report "
                       "then put the answer beside it).")
    p.add_argument("run_dir")
    p.add_argument("--network", metavar="NAME", help="auto (the ResNet closest in parameters "
                   "to the answer that gets at least the answer's epochs in its time, else "
                   "the next smaller) or a zoo name such as resnet8, resnet20, resnet20x2; "
                   "default: the run's `reference` setting, else auto")
    _exec_args(p)
    p = sub.add_parser("ensemble", help="snapshot ensemble of one run, or across several runs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", help="write the ensemble result as JSON to this file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    _exec_args(p)
    p = sub.add_parser("evaluate", help="evaluate a run's model on its test or validation set, "
                       "or on your own labelled images (--data)", description="Accuracy and "
                       "loss of a run's model on a part of its own dataset (--part, which needs "
                       "that dataset) or on a labelled folder tree of new images (--data, which "
                       "does not).")
    p.add_argument("run_dir")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--member", metavar="ID", help=MEMBER_HELP)
    p.add_argument("--part", choices=["test", "val", "train"], help="part of the run's own "
                   "dataset (default test)")
    p.add_argument("--data", metavar="FOLDER", help="score a labelled folder tree of new images "
                   "instead: FOLDER/<class>/*.png|jpg|jpeg or FOLDER/test/<class>/*, folder "
                   "names matched to the run's classes (any subset of them), images read as "
                   "predict reads them; the run's dataset is not needed")
    p.add_argument("--device")
    p = sub.add_parser("show", help="a run's summary and final architecture")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print results.json instead")
    p.add_argument("--arch", metavar="MODEL", nargs="?", const="", help="print only the "
                   "architecture JSON of MODEL (default: the run's model), the format --start "
                   "reads")
    p = sub.add_parser("predict", help="top classes of image files (or folders of them) by a "
                       "run's model or snapshot ensemble", description="Top classes of image "
                       "files (or folders of them) by a run's model or snapshot ensemble. Only "
                       "the run directory is read: the class names, image size and "
                       "normalisation were recorded when the run started, so the run's dataset "
                       "is not needed.")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--member", metavar="ID", help=MEMBER_HELP[:-1] + " or --ensemble)")
    p.add_argument("--ensemble", choices=["snapshot"], help="average the snapshot ensemble's "
                   "members instead of one model")
    p.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    p.add_argument("--device")
    p.add_argument("--out", help="also write the predictions to this .csv or .json file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    try:
        from .report_cli import add_commands
        add_commands(sub)
    except ImportError:
        pass
    return ap


MODEL_HELP = ("model id in the run (default: the run's model: final, or retrain with "
              "final_model=retrain)")
MEMBER_HELP = ("a Pareto search's front member (`show` lists them): its final training, "
               "final or final-ID (not with --model)")


def _resume_keys() -> list[str]:
    from .config import EXEC_KEYS, RESUME_KEYS
    return sorted(set(RESUME_KEYS) | set(EXEC_KEYS))


def _exec_overrides(args) -> dict:
    keys = {"device": "device", "executor": "executor", "workers": "workers",
            "ray_address": "ray_address"}
    return {k: getattr(args, a) for a, k in keys.items() if getattr(args, a, None) is not None}


def cmd_search(args) -> int:
    from .config import resolve
    overrides = _exec_overrides(args)
    for key, attr in (("dataset", "dataset"), ("data_root", "data_root"), ("seed", "seed"),
                      ("start", "start"), ("start_weights", "start_weights"),
                      ("start_model", "start_member")):
        if getattr(args, attr) is not None:
            overrides[key] = getattr(args, attr)
    if args.tensorboard:
        overrides["tensorboard"] = True
    cfg = resolve(args.preset, args.config, overrides, args.set)   # errors before torch loads
    from .cli_progress import Progress
    from .nash import hill_climb
    prog = Progress(args.quiet)
    res = hill_climb(cfg, args.out, callback=prog.event, on_epoch=prog.epoch,
                     progress=not args.quiet)
    _print_result(res.results)
    return _failures(res.results)


def cmd_resume(args) -> int:
    from .cli_progress import Progress
    from .config import parse_sets
    from .nash import resume
    prog = Progress(args.quiet)
    res = resume(args.run_dir, callback=prog.event, on_epoch=prog.epoch,
                 retry_failed=args.retry_failed,
                 **{**parse_sets(args.set), **_exec_overrides(args)})
    _print_result(res.results)
    return _failures(res.results)


SKIP_JOB = {"baseline": "baseline=false", "retrain": "retrain=false",
            "reference": "reference=null", "snapshots": "snapshot_ensemble=false"}


def _failures(r: dict) -> int:
    """Print the jobs after the climb that failed (results.json's climb.failed), with how to
    train each again or go without it; 1 when one did (the answer stands), else 0."""
    from .config import retrain_is_answer
    from .errors import failure_kind
    failed = (r.get("climb") or {}).get("failed") or {}
    run, final = r["run_dir"], r.get("final") or {}
    was_answer = retrain_is_answer(r["config"].get("final_model", "search"),
                                   final.get("epochs", 0), final.get("epochs_total") or 0)
    for job, why in failed.items():
        kind = failure_kind(why)
        again = {"memory": " --set batch_size=...", "divergence": " --set lr_start=..."}.get(
            kind, "")
        skip = SKIP_JOB[job]
        if job == "retrain" and was_answer:
            skip = "final_model=search"
            print(f"{job} failed: {why}; the retrained network was to be the run's answer, "
                  f"which falls back to {r['model']} (the search's own final model)")
        else:
            print(f"{job} failed: {why}; the run's answer ({r['model']}) stands")
        print(f"  train it again: `morphclimb resume {run} --retry-failed{again}`; go without "
              f"it: `morphclimb resume {run} --set {skip}`")
    return 1 if failed else 0


def _print_result(r: dict) -> None:
    climb = r.get("climb") or {}
    if climb.get("stopped"):
        print(f"climb stopped after {climb['steps_run']} of {climb['n_steps']} steps: "
              f"{climb['stopped']}")
    if climb.get("final_plan"):
        from .results import final_plan_text
        print(final_plan_text(climb["final_plan"]))
    for job, why in (climb.get("skipped") or {}).items():
        print(f"{job} skipped: {why}")
    f = r["final"]
    print(f"final: test error {f['test_error']:.2f}% ({100 - f['test_error']:.2f}% accuracy), "
          f"{f['params']:,} parameters, {f['convs']} conv layers; run directory {r['run_dir']}")
    for key, label in (("baseline", "starting network, same epochs"),
                       ("retrain", "found architecture retrained from scratch")):
        if key in r:
            print(f"{label}: test error {r[key]['test_error']:.2f}%")
    from .results import reference_line
    if reference_line(r):
        print(reference_line(r))
    if r.get("model", "final") != "final" or r["config"].get("final_model") == "auto":
        why = r.get("model_why") or f"final_model={r['config'].get('final_model')}"
        print(f"the run's answer (evaluate, export, predict): {r['model']}; {why}")
    if "snapshot_ensemble" in r:
        e = r["snapshot_ensemble"]
        print(f"snapshot ensemble ({len(e['members'])} models): test error "
              f"{e['test_error']:.2f}%, {e['params']:,} parameters")
    from .strategy import strategy_of
    for line in strategy_of(r["config"]).result_lines(r):
        print(line)


def cmd_extra(args, what: str) -> int:
    from .cli_progress import Progress
    from .commands import run_extra
    prog = Progress(args.quiet)
    member = getattr(args, "member", None)
    r = run_extra(args.run_dir, what, _exec_overrides(args), prog, member=member,
                  network=getattr(args, "network", None))
    _print_result(r)
    done = next((m.get("retrain") for m in r.get("front") or [] if m["id"] == member), None)
    if done:
        print(f"front member {member}'s architecture retrained from scratch "
              f"({done['model']}): test error {done['test_error']:.2f}%")
    return 0


def cmd_ensemble(args) -> int:
    from .paths import cannot_create, check_creatable
    out = Path(args.out) if args.out else None
    if out is not None:   # checked before the ensemble is computed
        if out.exists() and not args.force:
            raise RunDirError(f"{out} already exists; pick another --out or pass --force")
        check_creatable(out, "ensemble result file")
    if len(args.run_dirs) == 1:
        from .cli_progress import Progress
        from .commands import run_extra
        r = run_extra(args.run_dirs[0], "ensemble", _exec_overrides(args), Progress(args.quiet))
        _print_result(r)
        res = r.get("snapshot_ensemble")
    else:
        from .device import resolve_device
        from .ensemble import ensemble_across_runs
        res = ensemble_across_runs(args.run_dirs, resolve_device(args.device))
        print(f"ensemble across {len(args.run_dirs)} runs: test error "
              f"{res['test_error']:.2f}%, {res['params']:,} parameters")
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1))
        except OSError as e:
            raise cannot_create("ensemble result file", out, e) from e
    return 0


def cmd_evaluate(args) -> int:
    from .commands import evaluate_run
    from .members import pick
    r = evaluate_run(args.run_dir, pick(args.run_dir, args.model, args.member), args.part,
                     args.device, data=args.data)
    print(f"{r['model']} on {r['on']} ({r['n']} images): accuracy {100 * r['accuracy']:.2f}%, "
          f"error {100 * (1 - r['accuracy']):.2f}%, loss {r['loss']:.4f}")
    return 0


def cmd_show(args) -> int:
    from .commands import show_arch, show_run
    if args.arch is not None:
        print(show_arch(args.run_dir, args.arch or None))
        return 0
    print(show_run(args.run_dir, as_json=args.json))
    return 0


def cmd_predict(args) -> int:
    from .members import pick
    from .predict import check_out, check_top, predict, write
    check_top(args.top)
    model = pick(args.run_dir, args.model, args.member, args.ensemble)
    if args.out:
        check_out(args.out, args.run_dir, args.force)
    pred = predict(args.run_dir, args.images, model=model, ensemble=args.ensemble,
                   device=args.device)
    for name, top in zip(pred.images, pred.top(args.top), strict=True):
        print(f"{name}: " + ", ".join(f"{c} {p:.4f}" for c, p in top))
    if args.out:
        path = write(pred, args.out, args.top, force=args.force)
        print(f"wrote {len(pred.images)} predictions to {path}")
    return 0


COMMANDS = {"search": cmd_search, "resume": cmd_resume, "ensemble": cmd_ensemble,
            "evaluate": cmd_evaluate, "show": cmd_show, "predict": cmd_predict,
            "retrain": lambda a: cmd_extra(a, "retrain"),
            "reference": lambda a: cmd_extra(a, "reference")}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run, map user errors to a one-line message and exit status 2."""
    args = parser().parse_args(argv)
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    try:
        return handler(args)
    except TrainingError as e:
        print(f"morphclimb: training failed: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    except MorphclimbError as e:
        print(f"morphclimb: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except ImportError as e:   # an optional dependency that no check caught: name its extra
        from .extras import from_import_error
        missing = from_import_error(e)
        if missing is None:
            raise
        print(f"morphclimb: error: {missing}", file=sys.stderr)
        return 2
    except OSError as e:   # the system's own words, one line: a path the user named that
        print(f"morphclimb: error: {e}", file=sys.stderr)   # cannot be used is a user error
        return 2 if e.errno in USER_ERRNOS else 1   # (2); a full disk or an I/O error is not
    except KeyboardInterrupt:
        print("morphclimb: interrupted; continue with `morphclimb resume RUN_DIR`",
              file=sys.stderr)
        return 130


# errors of a path the user named (permission denied, a file where a folder should be, ...)
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                         errno.ENOENT, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP})


if __name__ == "__main__":
    sys.exit(main())
