"""Time predictions over a climb (nash.Climber): what the trainings still to come will take,
from the trainings measured so far; what the time budget (rules.TimeBudget) asks."""

from __future__ import annotations

from .budget import TimeModel, fits, image_passes, mflops
from .config import retrain_is_answer
from .context import SearchContext
from .events import FINAL, MODEL0, Event
from .spec import Arch


def budget_stop(climber: SearchContext, i: int, tasks: list, best: dict, rungs=None,
                seconds: float | None = None) -> dict | None:
    """None when step i's remaining trainings, then the final training (and the jobs after
    it), fit in what is left of the time budget (`seconds`, by default the config's); else
    why the climb stops there (the climb_stopped record's step, steps_run, reason and
    predicted costs, which the engine journals).

    `rungs`: with successive halving, the rungs still ahead (`tasks` train the first).
    """
    c = climber.c
    budget = c.time_budget if seconds is None else seconds
    model = time_model(climber)
    n_train, n_val = len(climber.split.train), len(climber.split.val)
    costs = {}
    todo = [t for t in tasks if climber.state.outcome(t.model_id) is None]
    if todo:
        sizes = [mflops(Arch.from_dict(t.arch)) for t in todo]
        if rungs:   # halving: the pruner's survivors go on to each next rung
            n, passes = len(todo), 0.0
            for epochs in rungs:
                passes += n * image_passes(epochs, n_train, n_val)
                n = climber.rules.pruner.survivors(n)
            costs[f"step {i}"] = model.seconds(sum(sizes) / len(sizes), passes)
        else:
            costs[f"step {i}"] = sum(model.seconds(m, image_passes(t.epochs, n_train, n_val))
                                     for m, t in zip(sizes, todo))
    after = after_climb_costs(climber, model, best, steps_done=i)   # with step i decided
    if c.final_share is not None:   # the plan: the final training takes at least its share,
        # then what the climb leaves (plan_final); the jobs after it only what the final leaves
        after = {"final": max(after["final"], c.final_share * budget)}
    costs.update(after)
    ok, account = fits(budget - climber.clock(), costs)
    if ok:
        return None
    what = f"step {i}" if len(todo) == len(tasks) else f"the rest of step {i}"
    return {"step": i, "steps_run": i - 1,
            "reason": f"time budget {budget:.0f}s: {what} and what follows {account}",
            "predicted": costs}


def after_climb_costs(climber: SearchContext, model: TimeModel, best: dict, steps_done: int
                      ) -> dict[str, float]:
    """Predicted seconds of the final training and of the jobs configured after it."""
    c, split = climber.c, climber.split
    n_full, n_test = len(split.train_full), len(split.test)
    size = mflops(climber.load_arch(best["model"]))
    done = climber.state.trained.get(FINAL)   # trained: its epochs (re-planned) as they were
    epochs = done["epochs"] if done is not None else final_epochs(climber)
    # every model that gets a final training, as the climb stands (NASH: the best)
    finals = climber.strategy.finishing_now(climber.state, best, c)
    out = {"final": sum(model.seconds(mflops(climber.load_arch(m["model"])),
                                      image_passes(epochs, n_full, n_test)) for m in finals)}
    lineage = best.get("lineage", 0) + epochs
    if c.baseline:
        m0 = mflops(climber.load_arch(MODEL0))
        out["baseline"] = model.seconds(m0, image_passes(lineage, n_full, n_test))
    if c.retrain or retrain_is_answer(c.final_model, epochs, lineage):
        out["retrain"] = model.seconds(size, image_passes(lineage, n_full, n_test))
    if c.snapshot_ensemble and steps_done > 1:
        out["snapshots"] = (steps_done - 1) * model.seconds(
            size, image_passes(c.epoch_final, n_full, n_test))
    return out


def final_epochs(climber: SearchContext) -> int:
    """The epochs of the final training(s): the plan's (final_share), else epoch_final."""
    plan = climber.state.final_plan
    return int(plan["epochs"]) if plan is not None else climber.c.epoch_final


def plan_final(climber: SearchContext, members: list[dict]) -> dict:
    """With final_share: the final training's epochs, as many as fit in what the climb left
    of the time budget at the speed measured so far (at least epoch_final), for `members`
    (NASH: the winner; a Pareto search: the front members that get one). Journaled once
    (final_planned), so a resumed run keeps the plan."""
    st, c, split = climber.state, climber.c, climber.split
    if st.final_plan is not None:
        return st.final_plan
    model = time_model(climber)
    n_full, n_test = len(split.train_full), len(split.test)
    sizes = [mflops(climber.load_arch(m["model"])) for m in members]

    def cost(epochs: int) -> float:
        return sum(model.seconds(m, image_passes(epochs, n_full, n_test)) for m in sizes)

    left = c.time_budget - climber.clock()
    per_epoch = cost(1) - cost(0)
    epochs = c.epoch_final
    if per_epoch > 0:
        epochs = max(epochs, int((left - cost(0)) // per_epoch))
    return climber.log({"event": Event.FINAL_PLANNED, "epochs": epochs,
                        "seconds_left": round(left, 3), "seconds_per_epoch": per_epoch,
                        "members": [m["model"] for m in members]})


def final_deadline(climber: SearchContext, model_id: str) -> float:
    """The seconds the plan's final training of `model_id` may take from its start: what is
    left of the time budget now, less the test evaluations of the final trainings still to
    run, shared among them in proportion to an epoch of each (NASH: one, the whole rest).
    The training re-plans its epochs against it as it goes (worker.deadline_replan)."""
    from .pareto import final_id
    st, split = climber.state, climber.split
    members = st.final_plan["members"]
    ids = [FINAL] + [final_id(m, members[0]) for m in members[1:]]
    todo = [(mid, m) for mid, m in zip(ids, members) if mid == model_id or mid not in st.trained]
    model = time_model(climber)
    n_full, n_test = len(split.train_full), len(split.test)
    evals, epochs = {}, {}
    for mid, m in todo:
        size = mflops(climber.load_arch(m))
        evals[mid] = model.seconds(size, image_passes(0, n_full, n_test))
        epochs[mid] = model.seconds(size, image_passes(1, n_full, n_test)) - evals[mid]
    left = climber.c.time_budget - climber.clock() - sum(evals.values())
    total = sum(epochs.values())
    share = epochs.get(model_id, 0.0) / total if total > 0 else 1.0 / len(todo)
    return max(left, 0.0) * share


def time_model(climber: SearchContext) -> TimeModel:
    """Seconds per image pass against MFLOPs, from every training measured so far."""
    split = climber.split
    sizes = {"train": len(split.train), "train_full": len(split.train_full)}
    evals = {"val": len(split.val), "test": len(split.test)}
    samples = []
    for r in climber.state.trained.values():
        if "seconds" not in r:
            continue
        m = r.get("mflops")
        if m is None:
            m = mflops(climber.load_arch(r["model"]))
        ev = "test" if r.get("part") == "train_full" else "val"
        samples.append((m, image_passes(r["epochs"], sizes.get(r.get("part"), 0),
                                        evals[ev]), r["seconds"]))
    return TimeModel(samples)
