"""Runs around the search: the starting network as a baseline, and retraining from scratch."""

from __future__ import annotations

from .zoo import starting_arch


def run_baseline(climber) -> dict:
    """model_0's architecture trained from fresh weights for the search's total epochs."""
    c, split = climber.c, climber.split
    arch = starting_arch(split.channels, split.num_classes, split.image_size, widths=c.widths)
    return climber.train_one("baseline", arch, None, c.total_epochs, part="train_full",
                             eval_part="test", role="baseline")


def run_retrain(climber) -> dict:
    """The found architecture trained from fresh weights for as many epochs as the winner got."""
    final = climber.trained["final"]
    arch = climber.run.load_arch(final["model"])
    epochs = final.get("lineage", climber.c.total_epochs)
    return climber.train_one("retrain", arch, None, epochs, part="train_full", eval_part="test",
                             role="retrain")
