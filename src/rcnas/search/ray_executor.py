"""`RayExecutor`: evaluate a batch of candidates in parallel as Ray tasks, on this machine or a cluster.

Same contract as `LocalExecutor.map`: one `Record` per architecture, in the order asked, and an
evaluation that raises is retried once and then recorded as a failed candidate (`safe_evaluate` runs
inside the task), so the search loop is the same code for both executors.

    from rcnas.search.ray_executor import RayExecutor
    ctx.executor = RayExecutor(num_gpus=0.25)          # four sub-networks share each GPU
    ctx.executor = RayExecutor(address="auto")         # join the cluster started by `ray start`

What happens where:

* The driver (this process) owns the search, the store and the agent; workers only run
  `safe_evaluate(evaluator, task, arch, seed)` and return the `Record`.
* The evaluator is put into the object store once per `map` call. A worker keeps the evaluators it
  has unpickled (keyed by their pickled bytes), so an evaluator's own caches (dataset splits, the
  loaded teacher) stay warm across the candidates that worker evaluates.
* A worker process that dies (segfault, killed for memory) is retried `max_retries` times by Ray;
  if it keeps dying, the candidate is recorded as failed. A task that cannot run at all (rcnas not
  importable on a node, the evaluator cannot be unpickled) is a `RunFailure`: it says nothing about
  the candidate, so it is not written into the store as one.
* Ctrl-C while waiting cancels every pending task (force: their workers are killed) and re-raises.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from rcnas.errors import BadInput, RunFailure
from rcnas.search.evaluator import Evaluator
from rcnas.search.store import Record
from rcnas.space.arch import Arch
from rcnas.tasks import ResolvedTask

logger = logging.getLogger("rcnas.search.ray")

RAY_MISSING = "ray is not installed: pip install 'rcnas[ray]'"
WAIT_S = 0.5  # ray.wait timeout per loop turn: Ctrl-C is seen between turns

# Worker side: evaluators unpickled by this worker process, most recently used last.
_WORKER_EVALUATORS: OrderedDict[str, Evaluator] = OrderedDict()
_WORKER_CACHE_SIZE = 4


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BadInput(RAY_MISSING) from None
    return ray


def _worker_evaluator(key: str, box: list) -> Evaluator:
    """The evaluator `key`, unpickled once per worker process (`box` holds its object ref, boxed in a
    list so that Ray does not fetch it for a task whose worker already holds it)."""
    ev = _WORKER_EVALUATORS.get(key)
    if ev is None:
        import ray
        from ray import cloudpickle
        ev = cloudpickle.loads(ray.get(box[0]))
        _WORKER_EVALUATORS[key] = ev
        while len(_WORKER_EVALUATORS) > _WORKER_CACHE_SIZE:
            _WORKER_EVALUATORS.popitem(last=False)
    _WORKER_EVALUATORS.move_to_end(key)
    return ev


def _evaluate_task(key: str, box: list, task: ResolvedTask, arch: Arch, seed: int, threads: int) -> Record:
    """The body of one Ray task (runs in a worker)."""
    import torch

    from rcnas.search.evaluator import safe_evaluate
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)  # as many as the task's CPUs: no oversubscription
    return safe_evaluate(_worker_evaluator(key, box), task, arch, seed)


def _failed(task: ResolvedTask, arch: Arch, error: BaseException) -> Record:
    from rcnas.cost import arch_cost
    cost = arch_cost(arch, task.input_size, task.in_channels, task.num_classes)
    return Record(arch, {}, cost.macs, cost.params, status="failed",
                  error=f"{type(error).__name__}: {error}", extra={"executor": "ray"})


class RayExecutor:
    """Evaluates candidates as Ray tasks (one per architecture) with declared resources.

    address: join an existing cluster (`"auto"`, `"ray://host:10001"`, `"host:6379"`); None starts a
        local one (all of this machine's CPUs and GPUs unless `init_kwargs` says otherwise).
    num_cpus: CPUs per evaluation; the worker also uses that many torch threads.
    num_gpus: GPUs per evaluation; fractional values (0.25) let several small sub-networks share a
        GPU (give the evaluator device auto or cuda, so it uses the GPU Ray assigns).
    max_retries: how many times Ray reruns an evaluation whose worker process died.
    init_kwargs: more keyword arguments for `ray.init` (e.g. `{"num_cpus": 2}` for the local
        cluster, or a `runtime_env`).
    """
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 1, init_kwargs: dict[str, Any] | None = None) -> None:
        if not (isinstance(num_cpus, (int, float)) and math.isfinite(num_cpus) and num_cpus > 0):
            raise BadInput(f"num_cpus per evaluation must be > 0, got {num_cpus!r}")
        if not (isinstance(num_gpus, (int, float)) and math.isfinite(num_gpus) and num_gpus >= 0):
            raise BadInput(f"num_gpus per evaluation must be >= 0 (fractions share a GPU), got {num_gpus!r}")
        if num_gpus > 1 and num_gpus != int(num_gpus):
            raise BadInput(f"num_gpus above 1 must be a whole number of GPUs, got {num_gpus!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise BadInput(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.max_retries = max_retries
        self.init_kwargs = dict(init_kwargs or {})
        self.threads = max(1, int(num_cpus))
        self._started = False    # this executor called ray.init (so shutdown() ends that cluster)
        self._remote = None

    # ------------------------------------------------------------------ cluster
    def _ray(self):
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address is not None:
                try:
                    ray.init(address=self.address, **self.init_kwargs)
                except ConnectionError as e:
                    raise BadInput(f"cannot join the Ray cluster at {self.address!r} ({e}); start it with "
                                   "`ray start --head`, or leave out the address to run a local one") from None
            else:
                kwargs = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
                ray.init(**(kwargs | self.init_kwargs))
            self._started = True
        if self._remote is None:
            self._check_resources(ray)
            options: dict[str, Any] = {
                "num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_retries": self.max_retries,
                "retry_exceptions": False}  # exceptions are safe_evaluate's business; crashes are Ray's
            if self.num_gpus == 0:
                # Ray leaves CUDA_VISIBLE_DEVICES alone for a task that asks for no GPU: on a GPU node,
                # an evaluator on device auto would then pile onto GPU 0 behind Ray's back.
                options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
            self._remote = ray.remote(_evaluate_task).options(**options)
        return ray

    def _check_resources(self, ray) -> None:
        """A task asking for more than the cluster has would wait forever: say so instead."""
        have = ray.cluster_resources()
        for what, need in (("CPU", self.num_cpus), ("GPU", self.num_gpus)):
            if need > 0 and have.get(what, 0) < need:
                msg = (f"each evaluation asks for {need:g} {what} but the Ray cluster has "
                       f"{have.get(what, 0):g}; lower num_{what.lower()}s")
                if self._started and self.address is None:
                    raise BadInput(msg)  # our own local cluster: it will not grow
                logger.warning("%s (or wait for the autoscaler)", msg)

    def shutdown(self) -> None:
        """End the Ray session if this executor started it (a joined or pre-started one is left alone)."""
        if self._started:
            import ray
            if ray.is_initialized():
                ray.shutdown()
            self._started = False
        self._remote = None

    def __enter__(self) -> RayExecutor:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ map
    def map(self, evaluator: Evaluator, task: ResolvedTask, archs: Sequence[Arch], seed: int) -> list[Record]:
        """One Record per architecture, in the order of `archs` (they are computed in parallel)."""
        archs = list(archs)
        if not archs:
            return []
        ray = self._ray()
        from ray import cloudpickle
        blob = cloudpickle.dumps(evaluator)
        key = hashlib.sha256(blob).hexdigest()
        box = [ray.put(blob)]
        refs = [self._remote.remote(key, box, task, arch, seed, self.threads) for arch in archs]
        where = {ref: i for i, ref in enumerate(refs)}
        results: list[Record | None] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
                for ref in done:
                    i = where[ref]
                    results[i] = self._result(ray, ref, task, archs[i])
        except BaseException:  # Ctrl-C, or an error that ends the search: stop what still runs
            self._cancel(ray, pending)
            raise
        return results  # type: ignore[return-value]

    @staticmethod
    def _cancel(ray, refs: list) -> None:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception as e:  # noqa: BLE001 - already finished or gone: nothing to stop
                logger.debug("could not cancel %s: %s", ref, e)

    @staticmethod
    def _result(ray, ref, task: ResolvedTask, arch: Arch) -> Record:
        from ray.exceptions import OutOfMemoryError, RayTaskError, WorkerCrashedError
        try:
            return ray.get(ref)
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, (BadInput, KeyboardInterrupt)):
                raise cause from None  # safe_evaluate re-raises these: the user must fix something
            raise RunFailure(f"a Ray worker could not evaluate {arch.key()} "
                             f"({type(cause).__name__ if cause else 'error'}: {cause or e}); is the same "
                             "rcnas installed on every node?") from e
        except (WorkerCrashedError, OutOfMemoryError) as e:
            # the worker died max_retries + 1 times on this candidate: a failed candidate, not a failed search
            logger.warning("evaluation of %s kept crashing its Ray worker: %s", arch.key(), e)
            return _failed(task, arch, e)
