"""Run directories: resolved config, an append-only JSONL journal, checkpoints, results.json."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArchError, RunDirError
from .events import Event, check_model_id, validate
from .spec import Arch
from .state import RunState

JOURNAL = "journal.jsonl"
CONFIG = "config.json"
DATA_LOCATION = ("dataset", "data_root")   # config.json may point a moved run at its data
MAX_FIRST_LINE = 1 << 20   # bytes of the journal's first line read by `first` at once
RESULTS = "results.json"
MODELS = "models"
PRUNED = "weights.dropped"  # marker: weights deleted on purpose (keep_weights=best)
LOCK = ".lock"              # held (flock) by the one process writing the run

# torch and safetensors are imported where tensors are read or written, so that reading a
# run's journal (`show`) does not import them
if TYPE_CHECKING:
    import torch


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


MAX_LINE = 16 << 20       # longest journal record read (bytes); the search writes < 1 MiB
MAX_JSON_FILE = 64 << 20  # largest config.json, arch.json or results.json read


def decode_json(data: bytes | str, where: str) -> Any:
    """JSON from a run file, or one RunDirError line naming `where`: malformed text, numbers
    the decoder refuses (integers past Python's 4,300 digits), nesting too deep to decode."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{where}: not valid JSON ({e})") from e
    except RecursionError:
        raise RunDirError(f"{where}: JSON nested too deeply to read") from None
    except ValueError as e:   # e.g. "Exceeds the limit (4300 digits) for integer string ..."
        raise RunDirError(f"{where}: a value JSON cannot hold here ({str(e)[:120]})") from None


def read_json_file(path: Path, what: str = "") -> Any:
    """decode_json of a run's file, refused when larger than MAX_JSON_FILE or unreadable."""
    try:
        if path.stat().st_size > MAX_JSON_FILE:
            raise RunDirError(f"{path} is {path.stat().st_size:,} bytes: larger than any "
                              f"{what or 'such file'} a run writes ({MAX_JSON_FILE:,})")
        data = path.read_bytes()
    except OSError as e:
        raise RunDirError(f"{path} is unreadable: {e.strerror or e}") from e
    return decode_json(data, str(path))


def check_config(config: dict[str, Any], where: str) -> None:
    """RunDirError naming `where` unless `config` is one the search could have run with
    (SearchConfig's own checks: keys, types, ranges)."""
    from .config import SearchConfig
    from .errors import ConfigError
    try:
        SearchConfig.from_dict(config)
    except ConfigError as e:
        raise RunDirError(f"{where}: the run's configuration is damaged: {e}") from None


class Journal:
    """Append-only JSON-lines log: `append(record)` and `read()` (Optuna's journal model)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record (a `time` stamp is added) durably; returns it."""
        record = {**record, "event": Event(record["event"]).value,
                  "time": record.get("time", time.time())}
        validate(record, f"{self.path}: new record")
        line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
        if self._torn():
            self.repair()   # the writer's job: a kill left half a line behind
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record

    def _complete(self) -> tuple[bytes, int]:
        """The journal's bytes and the length of its complete lines (a kill may tear the last)."""
        if not self.path.exists():
            return b"", 0
        raw = self.path.read_bytes()
        return raw, raw.rfind(b"\n") + 1

    def read(self) -> list[dict[str, Any]]:
        """All complete records, each checked (events.validate); the file is never changed.

        A torn last line (a kill mid-write, or a record being written right now) is ignored
        here; only the writer cuts it off (`repair`).
        """
        raw, good = self._complete()
        records = []
        for n, line in enumerate(raw[:good].splitlines(), start=1):
            where = f"{self.path}, line {n}"
            if len(line) > MAX_LINE:
                raise RunDirError(f"{where}: a record of {len(line):,} bytes, larger than any "
                                  f"the search writes ({MAX_LINE:,})")
            rec = decode_json(line, f"{where}: corrupt record")
            records.append(validate(rec, where))
        return records

    def first(self) -> dict[str, Any] | None:
        """The first complete record (checked like `read`'s), or None when there is none;
        reads only that line."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as f:
            line = f.readline(MAX_FIRST_LINE)
        if not line.endswith(b"\n"):
            return None if len(line) < MAX_FIRST_LINE else self.read()[0]
        where = f"{self.path}, line 1"
        return validate(decode_json(line, f"{where}: corrupt record"), where)

    def _torn(self) -> bool:
        """Whether the file ends in the middle of a line."""
        try:
            with open(self.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() == 0:
                    return False
                f.seek(-1, os.SEEK_END)
                return f.read(1) != b"\n"
        except FileNotFoundError:
            return False

    def repair(self) -> int:
        """Cut a torn last line off (the writer's job, under the run's lock); bytes removed."""
        raw, good = self._complete()
        if good != len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return len(raw) - good

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())


def save_checkpoint(directory: str | Path, arch: Arch, weights: dict[str, torch.Tensor],
                    meta: dict[str, Any] | None = None) -> Path:
    """Write arch.json + weights.safetensors (never a pickle) into `directory`, atomically."""
    from safetensors.torch import save_file
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
    from safetensors.torch import load_file
    d = Path(directory)
    arch = load_arch(d)
    if not (d / "weights.safetensors").is_file():
        raise RunDirError(f"{d} has no weights.safetensors: the run was made with "
                          "keep_weights=best, which deletes the weights of the models that "
                          "lost their step (only their arch.json is kept)"
                          if (d / PRUNED).is_file() else
                          f"{d} is not a checkpoint (needs arch.json and weights.safetensors)")
    path = d / "weights.safetensors"
    try:
        weights = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise RunDirError(f"{path} is unreadable: truncated, not a safetensors file, or its "
                          "header is damaged") from e
    check_checkpoint(path, arch, weights)
    return arch, weights


def check_checkpoint(path: Path, arch: Arch, weights: dict[str, torch.Tensor]) -> None:
    """RunDirError naming `path` and the tensor unless `weights` are what build(arch) holds:
    its keys and shapes, float32 (int64 BatchNorm counters), every value finite. What the
    search writes always is; a damaged or edited checkpoint must not export, predict or
    train as if it were (a float16 tensor fails later, a NaN predicts NaN)."""
    import torch

    from .build import check_weights
    try:
        check_weights(arch, weights, error=RunDirError)
    except RunDirError as e:
        raise RunDirError(f"{path}: {e}") from None
    for k, v in weights.items():
        want = torch.int64 if k.endswith("num_batches_tracked") else torch.float32
        if v.dtype != want:
            raise RunDirError(f"{path}: tensor {k} is {str(v.dtype).removeprefix('torch.')}, "
                              f"not {str(want).removeprefix('torch.')} as morphclimb writes it")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise RunDirError(f"{path}: tensor {k} holds NaN or infinite values")


def load_arch(directory: str | Path) -> Arch:
    """The architecture of a checkpoint (its weights are not read)."""
    d = Path(directory)
    if not (d / "arch.json").is_file():
        raise RunDirError(f"{d} is not a checkpoint (needs arch.json and weights.safetensors)")
    return read_arch_file(d / "arch.json")


def read_arch_file(path: str | Path) -> Arch:
    """An architecture from a JSON file such as `show` and `export` write (one-line errors)."""
    p = Path(path)
    d = read_json_file(p, "architecture")
    try:
        return Arch.from_dict(d)
    except ArchError as e:
        raise ArchError(f"{p}: {e}") from e
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ArchError(f"{p}: not an architecture ({type(e).__name__}: {e})") from e


def no_link(p: Path) -> None:
    """Refuse a symbolic link inside a run directory: it could lead reads or writes outside."""
    if p.is_symlink():
        raise RunDirError(f"{p} is a symbolic link; a run directory's files must be its own "
                          "(refusing to read or write through it)")


class RunDir:
    """A run directory: config.json, journal.jsonl, models/<id>/, results.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.journal = Journal(self.path / JOURNAL)

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> RunDir:
        """Make a new run directory: a new or empty folder, never one holding other files."""
        from .paths import cannot_create
        p = Path(path)
        try:   # any OSError (a permission denied, a file in the way): what and why, one line
            if p.exists() and not p.is_dir():
                raise RunDirError(f"--out {p} exists and is not a directory")
            if p.is_dir() and any(p.iterdir()):
                if (p / JOURNAL).exists():
                    raise RunDirError(f"{p} already holds a run; use `morphclimb resume {p}` "
                                      "or pick another --out")
                raise RunDirError(f"{p} is not empty; a run needs a new or empty directory "
                                  "(pick another --out: morphclimb never writes among other "
                                  "files)")
            p.mkdir(parents=True, exist_ok=True)
            probe = p / ".write-test"
            probe.write_text("ok")
            probe.unlink()
            run = cls(p)
            _atomic_write(p / CONFIG, json.dumps(config, indent=1, sort_keys=True).encode())
        except OSError as e:
            raise cannot_create("run directory", p, e) from e
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory."""
        p = Path(path)
        if not (p / CONFIG).is_file():
            raise RunDirError(f"{p} is not a morphclimb run directory (no {CONFIG})")
        for name in (CONFIG, JOURNAL, RESULTS, LOCK, MODELS):
            no_link(p / name)
        return cls(p)

    def lock(self) -> None:
        """Become the run's only writer (until the process ends or `unlock`); else RunDirError.

        A second `resume` of a running search stops here with a clear line instead of writing
        the same journal twice. The lock is an flock on RUN_DIR/.lock, released by the OS
        when the process dies, so a killed search never leaves a stale lock behind.
        """
        if getattr(self, "_lock", None) is not None:
            return
        f = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RunDirError(f"{self.path} is being written by another morphclimb process "
                              "(a search or resume still running); wait for it or stop it "
                              "first") from None
        self._lock = f
        self.journal.repair()

    def unlock(self) -> None:
        """Release the writer's lock (if held)."""
        f = getattr(self, "_lock", None)
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
            self._lock = None

    def config(self) -> dict[str, Any]:
        """The resolved config this run was started with: its journal's first record, with
        config.json checked against it (only the data's location may differ there), and
        checked as SearchConfig checks a config; one RunDirError line otherwise."""
        try:
            d = read_json_file(self.path / CONFIG, "config.json")
        except RunDirError as e:
            raise RunDirError(f"{self.path / CONFIG} is unreadable (truncated or not JSON): "
                              f"{e}") from e
        if not isinstance(d, dict):
            raise RunDirError(f"{self.path / CONFIG} must hold a JSON object")
        started = self.journal.first()
        if started is None or started.get("event") != Event.RUN_STARTED:
            return d           # killed before its first record: config.json is all there is
        rec = started.get("config")
        if not isinstance(rec, dict):
            raise RunDirError(f"{self.journal.path}, line 1: run_started's config must be a "
                              "JSON object")
        # the journal's record is the run's configuration; config.json may only say where
        # the data is now (a run moved to another machine; the data's identity is checked
        # against the run's record when it is loaded)
        missing = object()
        diff = sorted(k for k in set(rec) | set(d) - set(DATA_LOCATION)
                      if k not in DATA_LOCATION and rec.get(k, missing) != d.get(k, missing))
        if diff:
            raise RunDirError(f"{self.path / CONFIG} differs from the configuration the run "
                              f"started with (the journal's first record) in "
                              f"{', '.join(map(str, diff[:5]))}{', ...' if len(diff) > 5 else ''}"
                              "; restore it (the journal's is the run's), and change training "
                              "settings with `morphclimb resume RUN_DIR --set KEY=VALUE`")
        out = {**rec, **{k: d[k] for k in DATA_LOCATION if k in d}}
        check_config(out, f"{self.journal.path}, line 1 (or {self.path / CONFIG})")
        return out

    def model_dir(self, model_id: str) -> Path:
        """Where the checkpoint of `model_id` lives (never outside the run directory)."""
        d = self.path / MODELS / check_model_id(model_id)
        for p in (self.path / MODELS, d, d / "arch.json", d / "weights.safetensors"):
            no_link(p)
        return d

    def pick_model(self, model_id: str | None = None, where: str = "--model") -> str:
        """`model_id` checked to be a model of this run; None: the run's model (`final`, or
        `retrain` with final_model=retrain). RunDirError naming the models it has otherwise."""
        model_id = check_model_id(model_id or self.state().chosen_model(self.config()), where)
        if not self.model_dir(model_id).is_dir():
            known = sorted(p.name for p in (self.path / MODELS).glob("*"))
            raise RunDirError(f"{self.path} has no model {model_id!r}; it has "
                              f"{', '.join(known)}")
        return model_id

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

    def state(self) -> RunState:
        """The run's state, replayed from its journal (RunDirError where a record names a
        model the journal never trained: RunState.dangling)."""
        st = RunState.replay(self.journal.read())
        problem = st.dangling()
        if problem is not None:
            raise RunDirError(f"{self.journal.path}: {problem}")
        if st.started is not None:   # the configuration it records, as resumed
            check_config(st.config(st.started["config"]), f"{self.journal.path}, line 1")
        return st

    def write_results(self, results: dict[str, Any]) -> None:
        """Write results.json atomically."""
        _atomic_write(self.path / RESULTS, json.dumps(results, indent=1, sort_keys=True).encode())

    def results(self) -> dict[str, Any]:
        """results.json as a dict (RunDirError when the run has not finished)."""
        p = self.path / RESULTS
        if not p.is_file():
            raise RunDirError(f"{self.path} has no {RESULTS} yet: the search has not finished "
                              f"(resume it with `morphclimb resume {self.path}`)")
        try:
            r = read_json_file(p, "results.json")
        except RunDirError as e:
            raise RunDirError(f"{p} is unreadable: {e}") from e
        if not isinstance(r, dict):
            raise RunDirError(f"{p} must hold a JSON object")
        return r
