"""Run directories: resolved config, an append-only JSONL journal, checkpoints, results.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import RunDirError
from .spec import Arch

JOURNAL = "journal.jsonl"
CONFIG = "config.json"
RESULTS = "results.json"
MODELS = "models"
PRUNED = "weights.dropped"  # marker: weights deleted on purpose (keep_weights=best)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Journal:
    """Append-only JSON-lines log: `append(record)` and `read()` (Optuna's journal model)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record (a `time` stamp is added) durably; returns it."""
        record = {**record, "time": record.get("time", time.time())}
        line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record

    def read(self) -> list[dict[str, Any]]:
        """All complete records; a torn last line (a kill mid-write) is dropped and truncated."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        records, good = [], 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RunDirError(f"{self.path}: corrupt record at byte {good}: {e}") from e
            good += len(line)
        if good != len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())


def save_checkpoint(directory: str | Path, arch: Arch, weights: dict[str, torch.Tensor],
                    meta: dict[str, Any] | None = None) -> Path:
    """Write arch.json + weights.safetensors (never a pickle) into `directory`, atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    tmp = d / "weights.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (meta or {}).items()})
    os.replace(tmp, d / "weights.safetensors")
    _atomic_write(d / "arch.json", json.dumps(arch.to_dict(), indent=1).encode())
    return d


def load_checkpoint(directory: str | Path) -> tuple[Arch, dict[str, torch.Tensor]]:
    """Read a checkpoint written by `save_checkpoint`."""
    d = Path(directory)
    arch = load_arch(d)
    if not (d / "weights.safetensors").is_file():
        raise RunDirError(f"{d} has no weights.safetensors: the run was made with "
                          "keep_weights=best, which deletes the weights of the models that "
                          "lost their step (only their arch.json is kept)"
                          if (d / PRUNED).is_file() else
                          f"{d} is not a checkpoint (needs arch.json and weights.safetensors)")
    return arch, load_file(str(d / "weights.safetensors"))


def load_arch(directory: str | Path) -> Arch:
    """The architecture of a checkpoint (its weights are not read)."""
    d = Path(directory)
    if not (d / "arch.json").is_file():
        raise RunDirError(f"{d} is not a checkpoint (needs arch.json and weights.safetensors)")
    return Arch.from_dict(json.loads((d / "arch.json").read_text()))


class RunDir:
    """A run directory: config.json, journal.jsonl, models/<id>/, results.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.journal = Journal(self.path / JOURNAL)

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> RunDir:
        """Make a new run directory (refusing one that already holds a journal)."""
        p = Path(path)
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"cannot write to output directory {p}: {e.strerror or e}") from e
        if (p / JOURNAL).exists() and (p / JOURNAL).stat().st_size > 0:
            raise RunDirError(f"{p} already holds a run; use `morphclimb resume {p}` or pick "
                              "another --out")
        run = cls(p)
        _atomic_write(p / CONFIG, json.dumps(config, indent=1, sort_keys=True).encode())
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory."""
        p = Path(path)
        if not (p / CONFIG).is_file():
            raise RunDirError(f"{p} is not a morphclimb run directory (no {CONFIG})")
        return cls(p)

    def config(self) -> dict[str, Any]:
        """The resolved config this run was started with."""
        return json.loads((self.path / CONFIG).read_text())

    def model_dir(self, model_id: str) -> Path:
        """Where the checkpoint of `model_id` lives."""
        return self.path / MODELS / model_id

    def save_model(self, model_id: str, arch: Arch, weights: dict[str, torch.Tensor]) -> str:
        """Checkpoint a model; returns its path relative to the run directory."""
        save_checkpoint(self.model_dir(model_id), arch, weights, {"model": model_id})
        return f"{MODELS}/{model_id}"

    def load_model(self, model_id: str) -> tuple[Arch, dict[str, torch.Tensor]]:
        """Arch and weights of a checkpointed model."""
        return load_checkpoint(self.model_dir(model_id))

    def load_arch(self, model_id: str) -> Arch:
        """The architecture of a checkpointed model (also after its weights were dropped)."""
        return load_arch(self.model_dir(model_id))

    def drop_weights(self, model_id: str) -> int:
        """Delete a model's weights, keeping arch.json; returns the bytes freed (0 if none)."""
        d = self.model_dir(model_id)
        w = d / "weights.safetensors"
        if not w.is_file():
            return 0
        size = w.stat().st_size
        (d / PRUNED).touch()
        w.unlink()
        return size

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        """Journal records, optionally only those of one event type."""
        recs = self.journal.read()
        return [r for r in recs if event is None or r.get("event") == event]

    def write_results(self, results: dict[str, Any]) -> None:
        """Write results.json atomically."""
        _atomic_write(self.path / RESULTS, json.dumps(results, indent=1, sort_keys=True).encode())

    def results(self) -> dict[str, Any]:
        """results.json as a dict (RunDirError when the run has not finished)."""
        p = self.path / RESULTS
        if not p.is_file():
            raise RunDirError(f"{self.path} has no {RESULTS} yet: the search has not finished "
                              f"(resume it with `morphclimb resume {self.path}`)")
        return json.loads(p.read_text())
