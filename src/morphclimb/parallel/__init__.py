"""Parallel executors: a step's children train at once in local worker processes or on Ray.

Training a child is a pure function of its task (worker.run_task), so results do not depend on
which worker ran it or when. The data set travels to each worker once (shared memory, or the
Ray object store); tasks and outcomes (weights as CPU tensors) are pickled per child.
"""

from .local import LocalExecutor, worker_devices
from .ray_executor import RayExecutor
from .transport import DIED_TWICE, HOOK_ENV, Part, WorkerSplit, execute, pack_split

__all__ = ["DIED_TWICE", "HOOK_ENV", "LocalExecutor", "Part", "RayExecutor", "WorkerSplit",
           "execute", "pack_split", "worker_devices"]
