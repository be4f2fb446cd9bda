"""RayExecutor: the same search results as LocalExecutor, failures recorded not raised, Ctrl-C cancels.

One local Ray cluster of 2 CPUs serves the whole module (ray start is the slow part)."""
from __future__ import annotations

import json
import os
import sys

import pytest

ray = pytest.importorskip("ray")

from rcnas.cli import main
from rcnas.errors import BadInput
from rcnas.search.driver import LocalExecutor, run_search
from rcnas.search.evaluator import Evaluator
from rcnas.search.ray_executor import RayExecutor
from rcnas.search.searchers import make_searcher
from rcnas.testing import ToyEvaluator, toy_context

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU cluster started by a RayExecutor (the path `rcnas search --executor ray` takes),
    which ends it on exit; executors made inside join it and leave it running."""
    if ray.is_initialized():
        ray.shutdown()
    # workers inherit this environment: one BLAS/OMP thread each, like the suite (conftest)
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    with RayExecutor(init_kwargs={"num_cpus": 2, "runtime_env": env}) as owner:
        owner._ray()
        assert owner._started and ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
        yield owner
    assert not ray.is_initialized()


def _trials(result):
    return [(t.arch, t.reward, t.record.status) for t in result.trials]


@pytest.mark.parametrize("searcher", ["random", "rcnas"])
def test_ray_and_local_executors_give_the_same_search(cluster, searcher: str) -> None:
    runs = {}
    for name, executor in (("local", LocalExecutor()), ("ray", RayExecutor())):
        ctx = toy_context(seed=0)
        ctx.executor = executor
        runs[name] = run_search(make_searcher(searcher, ctx, seed=0), 12, progress=False)
    local, remote = runs["local"], runs["ray"]
    assert _trials(remote) == _trials(local)
    assert [t.record.metrics for t in remote.trials] == [t.record.metrics for t in local.trials]
    assert (remote.best.arch, remote.best.reward) == (local.best.arch, local.best.reward)
    assert remote.evaluations == local.evaluations == 12


def test_cli_search_with_ray_executor_equals_local(cluster, tmp_path, capsys) -> None:
    out = {}
    for executor in ("local", "ray"):
        rc = main(["search", "--evaluator", "toy", "--executor", executor, "--searcher", "random",
                   "--evaluations", "6", "--dataset", "digits", "--out", str(tmp_path / executor), "--json"])
        assert rc == 0
        out[executor] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for s in out.values():
        s.pop("seconds", None)
    assert out["ray"] == out["local"]
    trials = {e: (tmp_path / e / "trials.jsonl").read_text().splitlines() for e in out}
    rows = {e: [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]
            for e, lines in trials.items()}
    assert rows["ray"] == rows["local"] and len(rows["ray"]) == 6


class Flaky(Evaluator):
    """Raises for `broken` always, and for `flaky` on its first attempt only (per worker)."""
    name = "flaky"
    proxy_key = "flaky:v1"

    def __init__(self, broken, flaky, crash=None) -> None:
        self.toy = ToyEvaluator()
        self.broken, self.flaky, self.crash = broken, flaky, crash
        self.attempts: dict = {}

    def evaluate(self, task, arch, seed):
        self.attempts[arch] = self.attempts.get(arch, 0) + 1
        if arch == self.crash:
            os._exit(3)  # the worker process dies
        if arch == self.broken or (arch == self.flaky and self.attempts[arch] == 1):
            raise RuntimeError(f"boom on {arch.key()}")
        return self.toy.evaluate(task, arch, seed)


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value():
    # Flaky lives in this test module, which Ray workers cannot import: ship it by value.
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _archs(n: int):
    ctx = toy_context()
    space = ctx.space
    import random
    rng = random.Random(0)
    archs = list(dict.fromkeys(space.arch(s) for s in rng.sample(space.all_states(), 3 * n)))
    return ctx, archs[:n]


def test_failing_evaluation_is_retried_then_recorded_as_failed(cluster) -> None:
    ctx, archs = _archs(4)
    ev = Flaky(broken=archs[1], flaky=archs[2])
    records = RayExecutor().map(ev, ctx.task, archs, 0)
    assert [r.arch for r in records] == archs  # input order
    assert [r.status for r in records] == ["ok", "failed", "ok", "ok"]
    assert "RuntimeError: boom on" in records[1].error
    assert records[2].metrics == ToyEvaluator().evaluate(ctx.task, archs[2], 0).metrics  # retried, then ok
    assert LocalExecutor().map(ev, ctx.task, archs, 0)[1].status == "failed"  # the same as locally


def test_ctrl_c_cancels_pending_tasks_and_reraises(cluster, monkeypatch) -> None:
    class Slow(ToyEvaluator):
        def evaluate(self, task, arch, seed):
            import time
            time.sleep(0.5)
            return super().evaluate(task, arch, seed)

    ctx, archs = _archs(3)
    cancelled, calls = [], []
    real_wait = ray.wait

    def wait(refs, **kw):
        calls.append(len(refs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_wait(refs, **(kw | {"timeout": 0}))  # nothing finished yet: all stay pending

    monkeypatch.setattr(ray, "wait", wait)
    monkeypatch.setattr(ray, "cancel", lambda ref, force=False, **kw: cancelled.append((ref, force)))
    with pytest.raises(KeyboardInterrupt):
        RayExecutor().map(Slow(), ctx.task, archs, 0)
    assert cancelled and all(force for _, force in cancelled)
    assert len(cancelled) == calls[-1]  # every ref still pending was cancelled


def test_resources_and_missing_ray_are_clear_errors(cluster, monkeypatch, caplog) -> None:
    for bad in ({"num_cpus": 0}, {"num_gpus": -1}, {"num_gpus": 1.5}, {"max_retries": -1}):
        with pytest.raises(BadInput):
            RayExecutor(**bad)
    ex = RayExecutor(num_gpus=0.5)  # a cluster this executor joined may grow: a warning, not an error
    ex._ray()
    assert not ex._started and "asks for 0.5 GPU but the Ray cluster has 0" in caplog.text
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BadInput, match=r"pip install 'rcnas\[ray\]'"):
        RayExecutor().map(ToyEvaluator(), toy_context().task, _archs(1)[1], 0)


def test_joined_cluster_is_left_running(cluster) -> None:
    ex = RayExecutor()
    ex._ray()
    assert not ex._started
    ex.shutdown()
    assert ray.is_initialized()


# Last: these kill workers (force-cancel, crash), whose replacements take seconds to start.
def test_bad_input_inside_an_evaluation_reaches_the_caller(cluster) -> None:
    class Bad(ToyEvaluator):
        def evaluate(self, task, arch, seed):
            raise BadInput("fix me")

    ctx, archs = _archs(2)
    with pytest.raises(BadInput, match="fix me"):
        RayExecutor().map(Bad(), ctx.task, archs, 0)


def test_crashing_worker_is_retried_then_recorded_as_failed(cluster) -> None:
    ctx, archs = _archs(3)
    crashing = Flaky(broken=None, flaky=None, crash=archs[0])
    records = RayExecutor(max_retries=1).map(crashing, ctx.task, archs, 0)
    assert [r.status for r in records] == ["failed", "ok", "ok"]
    assert "WorkerCrashedError" in records[0].error
