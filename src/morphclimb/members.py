"""A Pareto search's front members by id: the model `--member ID` picks (export, predict,
evaluate, retrain), the model a search starts from (start_model), and the front's table as
`show` and the report print it. Nothing here prints or trains."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError, RunDirError
from .events import FINAL, RETRAIN
from .journal import RunDir

FRONT_HEADER = ["member", "params", "MFLOPs", "val. error (%)", "test error (%)",
                "final model"]


def is_pareto(config: dict[str, Any]) -> bool:
    """Whether a run's (effective) config is a search whose result is a front of members."""
    from .strategy import strategy_of
    return strategy_of(config).has_front


def front_ids(state, config: dict[str, Any]) -> list[str]:
    """The ids of the run's front members as the journal stands, smallest first."""
    from .pareto import current_front, error, size
    objective = config.get("objective", "params")
    return [r["model"] for r in sorted(current_front(state),
                                       key=lambda r: (size(r, objective), error(r)))]


def retrain_id(state, member: str) -> str:
    """The model id of `member`'s architecture retrained from scratch: `retrain` for the
    member whose final training is the run's `final`, retrain-<member> for any other."""
    final = state.trained.get(FINAL) or {}
    return RETRAIN if final.get("parent") == member else f"{RETRAIN}-{member}"


def check_member(run: RunDir, member: str, flag: str = "--member") -> tuple[Any, dict]:
    """(state, effective config) of `run` when `member` is one of its front members; a
    one-line RunDirError otherwise (a NASH run, or an id not on the front, naming it)."""
    state = run.state()
    cfg = state.config(run.config())
    if not is_pareto(cfg):
        raise RunDirError(f"{flag} picks a member of a Pareto search's front (strategy=pareto); "
                          f"{run.path} is a {cfg.get('strategy', 'nash')} run: pick its models "
                          "with --model ID")
    front = front_ids(state, cfg)
    if member not in front:
        raise RunDirError(f"{run.path} has no front member {member!r}; its front: "
                          f"{', '.join(front) or 'none yet'} (any model with its search-time "
                          "weights: --model ID)")
    return state, cfg


def member_model(run: str | RunDir, member: str) -> str:
    """The model id of front member `member`'s final training (train + validation, tested);
    a one-line RunDirError when it had none, suggesting --model for its search-time weights."""
    from .pareto import member_final
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    state, cfg = check_member(run, member)
    final = member_final(state, member)
    if final is None:
        why = (f"front_final={cfg.get('front_final')} trains only that many members"
               if state.finished is not None else "the run has not finished")
        raise RunDirError(f"front member {member} of {run.path} had no final training ({why}); "
                          f"use --model {member} for its search-time weights")
    return final


def pick(run_dir: str | RunDir, model: str | None = None, member: str | None = None,
         ensemble: str | None = None) -> str | None:
    """The model id that --model or --member names (None when neither: the run's model)."""
    if model is not None and member is not None:
        raise ConfigError("--model and --member both pick a model; give one of them")
    if ensemble is not None and member is not None:
        raise ConfigError("--member picks one model and --ensemble averages several; give "
                          "one of them")
    return model if member is None else member_model(run_dir, member)


def start_model(run: RunDir, state, model_id: str) -> str:
    """The model a search starts from with start=RUN_DIR and start_model=`model_id`: a
    front member's final training when it had one, else the model `model_id` itself."""
    from .events import check_model_id
    from .pareto import member_final
    check_model_id(model_id, "start_model")
    final = member_final(state, model_id)
    if final is not None:
        return final
    if model_id in state.trained and run.model_dir(model_id).is_dir():
        return model_id
    cfg = state.config(run.config())
    front = (f"its front: {', '.join(front_ids(state, cfg))}; " if is_pareto(cfg) else "")
    models = sorted(m for m in state.trained if run.model_dir(m).is_dir())
    raise RunDirError(f"start_model: {run.path} has no model or front member {model_id!r}; "
                      f"{front}its models: {', '.join(models) or 'none'}")


# ------------------------------------------------------------------ the front as a table
def _size(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def front_rows(results: dict[str, Any]) -> list[list[tuple[str, Any]]]:
    """results.json's front as table rows, smallest first: each cell (text, exact value or
    None), in FRONT_HEADER's columns."""
    rows = []
    for m in results.get("front") or []:
        test = m.get("test_error")
        rows.append([(m["id"], None), (f"{m['params']:,}", m["params"]),
                     (_size(m.get("mflops")), m.get("mflops")),
                     (f"{m['val_error']:.2f}", m["val_error"]),
                     ("-", None) if test is None else (f"{test:.2f}", test),
                     (m.get("model") or "-", None)])
    return rows


def front_caption(results: dict[str, Any]) -> str:
    """One line: the strategy, its objective and how to pick a member."""
    obj = results.get("objective", "params")
    return (f"Pareto search (strategy=pareto, objective={obj}): the front of validation error "
            f"against {obj}, {len(results.get('front') or [])} members, smallest first; pick one "
            "with --member ID (export, predict, evaluate, retrain; search --start RUN_DIR "
            "--start-member ID)")


def front_text(results: dict[str, Any]) -> list[str]:
    """The front as `show` prints it: the caption line, then an aligned table."""
    rows = [FRONT_HEADER] + [[text for text, _ in row] for row in front_rows(results)]
    widths = [max(len(r[k]) for r in rows) for k in range(len(FRONT_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return [front_caption(results)] + lines
