"""Jobs after the climb, over a Climber: the baseline, retraining from scratch, the snapshot
ensemble. Each is journaled like the search and skipped when its record is already there."""

from __future__ import annotations

import statistics

from .budget import EVAL_SHARE
from .context import SearchContext
from .events import BASELINE, FINAL, REFERENCE, RETRAIN, Event, snapshot_id
from .model0 import starting_arch


def run_baseline(climber: SearchContext) -> dict:
    """model_0's architecture trained from fresh weights as long as the answer was: the final
    model's lineage (the search's total epochs in a run that climbed all its steps; fewer
    where a budget stopped the climb, more where a plan's final training filled the budget)."""
    c, split = climber.c, climber.split
    arch = starting_arch(split.channels, split.num_classes, split.image_size, widths=c.widths)
    epochs = climber.state.trained[FINAL].get("lineage", c.total_epochs)
    return climber.train_one(BASELINE, arch, None, epochs, part="train_full",
                             eval_part="test", role="baseline")


def run_retrain(climber: SearchContext, member: str | None = None) -> dict:
    """The found architecture trained from fresh weights for as many epochs as the winner got.

    With `member` (a Pareto search's front member): that member's architecture, for as many
    epochs as its final training's lineage (its own plus epoch_final when it had none), as
    members.retrain_id names it (`retrain` for the member behind the run's `final`)."""
    if member is not None:
        from .members import retrain_id
        from .pareto import member_final
        state = climber.state
        mid = retrain_id(state, member)
        if mid != RETRAIN:
            done = state.trained.get(member_final(state, member) or "")
            epochs = (done or {}).get("lineage") or (
                state.trained[member].get("lineage", 0) + climber.c.epoch_final)
            return climber.train_one(mid, climber.run.load_arch(member), None, epochs,
                                     part="train_full", eval_part="test", role="retrain",
                                     parent=member)
    final = climber.state.trained[FINAL]
    arch = climber.run.load_arch(final["model"])
    epochs = final.get("lineage", climber.c.total_epochs)
    return climber.train_one(RETRAIN, arch, None, epochs, part="train_full", eval_part="test",
                             role="retrain")


def seconds_per_image(arch, data, config, mean, std, device, batches: int = 4) -> float:
    """Measured training seconds per image of `arch` (fresh weights) on `batches` batches of
    `data`, after one warm-up batch: what an epoch of it costs on this machine now."""
    import time

    import numpy as np

    from .build import build
    from .train import fit
    n = min(len(data), config.batch_size * batches)
    warm = data.subset(np.arange(min(len(data), config.batch_size)))
    part = data.subset(np.arange(n))
    model = build(arch, seed=0)
    fit(model, warm, epochs=1, config=config, mean=mean, std=std, seed=0, device=device)
    t = time.perf_counter()
    fit(model, part, epochs=1, config=config, mean=mean, std=std, seed=0, device=device)
    return (time.perf_counter() - t) / max(n, 1)


ROUNDS = 5   # side-by-side timings of the reference and the answer (the median pair counts)


def speed_ratio(ref_arch, answer_arch, data, config, mean, std, device, rounds: int = ROUNDS
                ) -> dict[str, float]:
    """The reference's training time per image over the answer's, timed in turn (reference,
    answer, reference, ...) `rounds` times: the median of the rounds' ratios, so that load
    that changes while they are timed moves each round's pair alike and a burst in one
    round does not count. Also the median seconds per image of each."""
    ref, ans = [], []
    for _ in range(rounds):
        ref.append(seconds_per_image(ref_arch, data, config, mean, std, device))
        ans.append(seconds_per_image(answer_arch, data, config, mean, std, device))
    ratios = [r / a for r, a in zip(ref, ans) if a > 0]
    return {"reference": statistics.median(ref), "answer": statistics.median(ans),
            "ratio": statistics.median(ratios) if ratios else 1.0, "rounds": rounds}


def reference_epochs(seconds: float, per_image: float, n_train: int, n_eval: int) -> int:
    """The most whole epochs on n_train images, plus one evaluation of n_eval images (a third
    of a training pass each), that take at most `seconds` at `per_image`; at least 1."""
    if per_image <= 0 or n_train <= 0:
        return 1
    return max(1, int((seconds / per_image - EVAL_SHARE * n_eval) // n_train))


def reference_plan(climber: SearchContext) -> dict:
    """The reference network and its epochs, journaled once (a resumed run keeps the plan).

    The wall time to match is the search's up to its answer (`answer_clock`: climb, final
    training(s) and, where the retrained network is the answer, its retraining). The epochs
    are as many as fit in it at the reference's speed under the search's own conditions: the
    reference and the answer are timed in turn here, a few batches each, five rounds
    (`speed_ratio`: the median round's ratio), and that ratio scales what the answer's final
    training took per image during the search (a machine busier or quieter now than during
    the search changes both alike). The network is `reference`, or with "auto" the CIFAR
    ResNet closest to the answer's parameter count that trains at least as many epochs in
    that time as the answer had (`answer_epochs`); where the closest gets fewer, each smaller
    one is tried in turn, and the smallest (ResNet-8) is taken where none gets as many: a
    big network starved of epochs would make a weak reference (journaled as `auto`: the
    answer's epochs and each network tried with its epochs).
    """
    state = climber.state
    if state.reference_plan is not None:
        return state.reference_plan
    from .budget import image_passes
    from .zoo import closest_then_smaller
    c, split = climber.c, climber.split
    final = state.trained[FINAL]
    seconds = answer_clock(climber)
    passes = image_passes(final["epochs"], len(split.train_full), len(split.test))
    then = final.get("seconds", 0.0) / passes if passes else 0.0   # the answer, in the search
    answer = climber.load_arch(FINAL)

    def plan_for(name: str) -> dict:
        return _plan_for(climber, name, seconds, answer, then)
    if c.reference != "auto":
        return climber.log({"event": Event.REFERENCE_PLANNED, **plan_for(c.reference),
                            "matched_seconds": seconds})
    need = answer_epochs(state, c.to_dict())
    tried = []
    for name in closest_then_smaller(final["params"], channels=split.channels,
                                     classes=split.num_classes, size=split.image_size):
        plan = plan_for(name)
        tried.append({"start_point": name, "epochs": plan["epochs"]})
        if plan["epochs"] >= need:
            break
    return climber.log({"event": Event.REFERENCE_PLANNED, **plan, "matched_seconds": seconds,
                        "auto": {"answer_epochs": need, "tried": tried}})


def _plan_for(climber: SearchContext, name: str, seconds: float, answer, then: float) -> dict:
    """The epochs of zoo network `name` in `seconds` at its speed under the search's
    conditions (reference_plan): its time per image over the answer's (architecture
    `answer`), timed now, times the answer's in the search (`then`); with the timings."""
    from .device import resolve_device
    from .zoo import zoo_arch
    split = climber.split
    arch = zoo_arch(name, split.channels, split.num_classes, split.image_size)
    config = climber.task(REFERENCE, arch, None, 1).config    # the search's training settings
    now = speed_ratio(arch, answer, split.train_full, config, split.mean, split.std,
                      resolve_device(climber.c.device))
    per_image = now["ratio"] * then if then > 0 else now["reference"]
    return {"start_point": name,
            "epochs": reference_epochs(seconds, per_image, len(split.train_full),
                                       len(split.test)),
            "seconds_per_image": per_image, "timed": {**now, "answer_in_search": then}}


def answer_epochs(st, config: dict) -> int:
    """The epochs the run's answer was trained in all: the retrained network's where it is
    the answer, else the final model's lineage (its ancestors' epochs and its own)."""
    if RETRAIN in st.trained and st.chosen_model(config) == RETRAIN:
        return int(st.trained[RETRAIN]["epochs"])
    final = st.trained[FINAL]
    return int(final.get("lineage") or final["epochs"])


def answer_clock(climber: SearchContext) -> float:
    """The search's wall time up to its answer (`answer_seconds` of the climber's run)."""
    return answer_seconds(climber.state, climber.c.to_dict())


def answer_seconds(st, config: dict) -> float | None:
    """The wall time a run took to make its answer: its clock at the last of its final
    trainings (a Pareto search's members too) or, where the run hands out its architecture
    retrained from scratch (final_model), at that retraining; less the baseline's training
    when it ran before that point (model_0 trained for comparison is no part of making the
    answer). None before the final training."""
    ids = [m for m, r in st.trained.items() if r.get("role") == "final" or m == FINAL]
    if not ids:
        return None
    if RETRAIN in st.trained and st.chosen_model(config) == RETRAIN:
        ids.append(RETRAIN)
    until = max(float(st.trained[m].get("clock") or 0.0) for m in ids)
    base = st.trained.get(BASELINE)
    if base is not None and float(base.get("clock") or 0.0) <= until:
        until -= float(base.get("seconds") or 0.0)
    return until


def run_reference(climber: SearchContext) -> dict:
    """A known-good network trained alone, by the same trainer, for the search's wall time."""
    from .zoo import zoo_arch
    plan = reference_plan(climber)
    split = climber.split
    arch = zoo_arch(plan["start_point"], split.channels, split.num_classes, split.image_size)
    return climber.train_one(REFERENCE, arch, None, plan["epochs"], part="train_full",
                             eval_part="test", role="reference", start_point=plan["start_point"],
                             matched_seconds=plan["matched_seconds"])


def snapshot_steps(state) -> list[int]:
    """The steps whose best becomes a snapshot-ensemble member: every decided step before the
    last decided one (whose best the final model is trained from). A climb a time budget
    stopped early has fewer than n_steps - 1; one stopped before its first step none."""
    return sorted(state.decided)[:-1]


def run_snapshot_ensemble(climber: SearchContext) -> dict:
    """Train each earlier step's best on train + validation, then ensemble them with the final."""
    from .device import resolve_device
    from .ensemble import evaluate_members
    state = climber.state
    done = state.ensemble("snapshot")
    if done is not None:
        return done
    members = []
    for i in snapshot_steps(state):
        best = state.trained[state.decided[i]["best"]]
        arch, w = climber.load_model(best["model"])   # restored if its checkpoint vanished
        rec = climber.train_one(snapshot_id(i), arch, w, climber.c.epoch_final,
                                part="train_full", eval_part="test", role="snapshot", step=i,
                                parent=best["model"], lineage=best.get("lineage", 0))
        members.append(rec["model"])
    members.append(FINAL)
    split = climber.split
    for m in members:
        climber.ensure(m)
    res = evaluate_members(climber.run, members, split.test, split.mean, split.std,
                           resolve_device(climber.c.device))
    return climber.log({"event": Event.ENSEMBLE_EVALUATED, "kind": "snapshot", **res})
