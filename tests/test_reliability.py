"""Reliability: real kills (SIGKILL) and resume, atomic outputs, determinism, safe loading, and two
processes sharing one store.

The kill tests run `python -m rcnas.cli` in a subprocess, wait until a checkpoint or a store row
appears, `kill -9` it, rerun the same command to completion, and compare with an uninterrupted run
of the same seed: same result, bit for bit, and nothing evaluated twice.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rcnas.errors import BadInput

CLI = [sys.executable, "-m", "rcnas.cli"]
POLL_S = 0.005


# ---------------------------------------------------------------- helpers

def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RCNAS_CACHE=str(tmp / "cache"))


def _start(args: list[str], tmp: Path, tag: str) -> subprocess.Popen:
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    return subprocess.Popen([*CLI, *args], cwd=tmp, env=_env(tmp), stdout=open(logs / f"{tag}.out", "w"),
                            stderr=open(logs / f"{tag}.err", "w"))


def _finish(p: subprocess.Popen, tmp: Path, tag: str, timeout: float = 150) -> dict:
    rc = p.wait(timeout=timeout)
    err = (tmp / "logs" / f"{tag}.err").read_text()
    assert rc == 0, f"{tag} exited {rc}:\n{err[-3000:]}"
    assert "Traceback" not in err
    return json.loads((tmp / "logs" / f"{tag}.out").read_text())


def _run(args: list[str], tmp: Path, tag: str) -> dict:
    return _finish(_start(args, tmp, tag), tmp, tag)


def _run_here(args: list[str], tmp: Path, capsys, monkeypatch) -> dict:
    """The uninterrupted reference run: the same CLI, in this (already warm) process."""
    from rcnas.cli import main
    monkeypatch.chdir(tmp)
    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    return json.loads(out)


def _kill_when(args: list[str], tmp: Path, tag: str, ready, timeout: float = 120) -> None:
    """Start the command, SIGKILL it as soon as `ready()` is true; fail if it ended on its own."""
    p = _start(args, tmp, tag)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if p.poll() is not None:
                err = (tmp / "logs" / f"{tag}.err").read_text()
                pytest.fail(f"{tag} ended (rc {p.returncode}) before the kill point:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{tag}: kill point not reached in {timeout}s")
            time.sleep(POLL_S)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL


def _store_rows(path: Path) -> int:
    if not path.exists():  # never create it: the command under test does
        return 0
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # no table yet, or busy
        return 0


def _store_content(path: Path) -> dict[tuple, str]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT eval_key, arch, proxy, seed, record FROM evaluations").fetchall()
    finally:
        conn.close()
    out = {tuple(r[:4]): r[4] for r in rows}
    assert len(out) == len(rows), "duplicate keys in the store"
    return out


def _json_field(path: Path, key: str) -> int:
    try:
        return int(json.loads(path.read_text())[key])
    except (OSError, ValueError, KeyError):  # not there yet
        return 0


def _outputs_parse(directory: Path) -> None:
    """Every file an interrupted command left that a later command would read is complete."""
    from rcnas.search.store import Record
    for p in directory.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue  # .NAME.XXXX.tmp: atomic_write's temporaries, which nothing reads
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            for line in p.read_text().splitlines():
                json.loads(line)
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".sqlite":
            for record in _store_content(p).values():
                Record.from_json(record)


def _trials(out: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return [(r["trial"], json.dumps(r["arch"]), r["reward"], json.dumps(r["metrics"], sort_keys=True), r["macs"])
            for r in rows]


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{a.name}: tensor {k} differs"


# ---------------------------------------------------------------- search: kill -9 and resume

SEARCH_CASES = {
    # searcher: (evaluations, kill after >= k store rows (teacher row included), one kill per point)
    "rcnas": (16, (2, 9)),  # the agent's own step (a fine-tuning update per evaluation) is the cost here
    "evolution": (100, (40,)),
}


@pytest.mark.slow
@pytest.mark.parametrize("searcher", list(SEARCH_CASES))
def test_search_killed_resumes_without_repeating(searcher, tmp_path, capsys, monkeypatch):
    n, kill_points = SEARCH_CASES[searcher]

    def args(out: str) -> list[str]:
        return ["search", "--dataset", "digits", "--teacher", "wrn-16-2", "--evaluator", "toy",
                "--searcher", searcher, "--agent", "scratch", "--evaluations", str(n), "--seed", "3",
                "--out", out, "--json"]

    ref = _run_here(args("ref"), tmp_path, capsys, monkeypatch)
    store = tmp_path / "run" / "store.sqlite"
    rows = 0
    for i, k in enumerate(kill_points):
        _kill_when(args("run"), tmp_path, f"kill{i}", lambda k=k: _store_rows(store) >= k)
        after = _store_rows(store)
        assert after >= max(k, rows), "a completed evaluation was lost"
        rows = after
        _outputs_parse(tmp_path / "run")
        assert not (tmp_path / "run" / "arch.yaml").exists()
    assert rows < n, "the search finished before the last kill"
    res = _run(args("run"), tmp_path, "resume")

    final = _store_content(store)
    assert res["new_evaluations"] == len(final) - rows, "the rerun repeated a stored evaluation"
    assert final == _store_content(tmp_path / "ref" / "store.sqlite")
    for key in ("arch", "reward", "macs", "metrics", "evaluations"):
        assert res[key] == ref[key], key
    assert res["evaluations"] == n
    assert _trials(tmp_path / "run") == _trials(tmp_path / "ref")
    assert (tmp_path / "run" / "arch.yaml").read_text() == (tmp_path / "ref" / "arch.yaml").read_text()
    if searcher == "rcnas":
        _same_tensors(tmp_path / "run" / "agent" / "agent.safetensors",
                      tmp_path / "ref" / "agent" / "agent.safetensors")


# ---------------------------------------------------------------- meta-train: kill -9 and resume

BUFFERS = """\
datasets: [digits]
teachers: [wrn-16-2]
attacks: [pgd, cw]
budgets: [0.4x, 0.6x]
held_out: []
agent: {searches_per_update: 4}
"""


@pytest.mark.slow
def test_meta_train_killed_resumes_to_the_same_agent(tmp_path, capsys, monkeypatch):
    (tmp_path / "buffers.yaml").write_text(BUFFERS)

    def args(out: str) -> list[str]:
        return ["meta-train", "--buffers", "buffers.yaml", "--evaluator", "toy", "--episodes", "48",
                "--seed", "1", "--out", out, "--json"]

    ref = _run_here(args("ref"), tmp_path, capsys, monkeypatch)
    meta = tmp_path / "run" / "agent.json"
    for i, k in enumerate((5,)):
        _kill_when(args("run"), tmp_path, f"kill{i}", lambda k=k: _json_field(meta, "updates") >= k)
        _outputs_parse(tmp_path / "run")
        from rcnas.agent.agent import Agent
        agent, _ = Agent.load(tmp_path / "run")
        assert k <= agent.updates < 12
    res = _run(args("run"), tmp_path, "resume")
    assert res["updates"] == ref["updates"] == 12
    _same_tensors(tmp_path / "run" / "agent.safetensors", tmp_path / "ref" / "agent.safetensors")
    hist = json.loads(meta.read_text())["history"]
    ref_hist = json.loads((tmp_path / "ref" / "agent.json").read_text())["history"]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "new_evaluations"} for r in rows]
    assert drop(hist) == drop(ref_hist)
    assert _store_content(tmp_path / "run" / "store.sqlite") == _store_content(tmp_path / "ref" / "store.sqlite")


# ---------------------------------------------------------------- train: kill -9 and resume

TRAIN = ["train", "--dataset", "digits", "--depths", "1", "1", "1", "--widths", "0.5", "0.5", "0.5",
         "--recipe", "pgd", "--epochs", "3", "--train-samples", "200", "--seed", "5", "--device", "cpu", "--json"]


@pytest.mark.slow
def test_train_killed_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch):
    ref = _run_here([*TRAIN, "--out", "ref"], tmp_path, capsys, monkeypatch)
    state = tmp_path / "run" / "checkpoints" / "state.json"
    for i, epoch in enumerate((1, 2)):
        _kill_when([*TRAIN, "--out", "run"], tmp_path, f"kill{i}",
                   lambda e=epoch: _json_field(state, "epoch") >= e)
        _outputs_parse(tmp_path / "run")
        assert not (tmp_path / "run" / "model.safetensors").exists()
        assert epoch <= _json_field(state, "epoch") < 3
    res = _run([*TRAIN, "--out", "run"], tmp_path, "resume")
    assert res["best_epoch"] == ref["best_epoch"]
    assert res["val_clean"] == ref["val_clean"] and res["val_robust"] == ref["val_robust"]
    _same_tensors(tmp_path / "run" / "model.safetensors", tmp_path / "ref" / "model.safetensors")
    strip = lambda h: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in h]
    assert strip(json.loads((tmp_path / "run" / "history.json").read_text())) == \
        strip(json.loads((tmp_path / "ref" / "history.json").read_text()))


# ---------------------------------------------------------------- two processes, one store

@pytest.mark.slow
def test_two_searches_share_one_store(tmp_path):
    store = tmp_path / "shared.sqlite"
    runs = {"a": ("random", 80), "b": ("evolution", 80)}
    procs = {tag: _start(["search", "--dataset", "digits", "--teacher", "wrn-16-2", "--evaluator", "toy",
                          "--searcher", s, "--evaluations", str(n), "--seed", "0", "--store", str(store),
                          "--out", tag, "--json"], tmp_path, tag)
             for tag, (s, n) in runs.items()}
    results = {tag: _finish(p, tmp_path, tag) for tag, p in procs.items()}

    from rcnas.search.store import Record
    from rcnas.space.arch import Arch
    content = _store_content(store)
    records = [Record.from_json(r) for r in content.values()]  # every row parses
    archs = {k[1] for k in content}
    union = {Arch.from_dict(json.loads(t[1])).key() for tag in runs for t in _trials(tmp_path / tag)}
    teacher = Arch.wrn(16, 2).key()
    assert archs == union | {teacher}
    assert len(records) == len(content) == len(union | {teacher})
    assert all(r.status == "ok" for r in records)
    for tag, (_, n) in runs.items():
        assert results[tag]["evaluations"] == n
    # whoever computed a shared candidate first, both got the same numbers as a search alone
    import rcnas.api as rc
    for tag, (s, n) in runs.items():
        alone = rc.search(rc.Task("digits", "pgd", "wrn-16-2", "0.5x"), searcher=s, evaluations=n,
                          evaluator="toy", seed=0, progress=False)
        assert alone.best.arch.to_dict() == results[tag]["arch"]
        assert alone.best.reward == results[tag]["reward"]


# ---------------------------------------------------------------- two processes, one output directory

HOLD = """
import sys, time
from rcnas.io import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


WRITERS = {  # every command that writes an --out directory, with arguments that would run it
    "search": ["search", "--dataset", "digits", "--teacher", "wrn-16-2", "--evaluator", "toy",
               "--searcher", "random", "--evaluations", "3"],
    "run": ["run", "--evaluations", "1", "--epochs", "1", "--aa-samples", "0"],
    "train": ["train", "--dataset", "digits", "--depths", "1", "1", "1", "--widths", "0.5", "0.5", "0.5",
              "--epochs", "1"],
    "meta-train": ["meta-train", "--buffers", "buffers.yaml", "--evaluator", "toy", "--episodes", "8"],
}


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; the lock itself is POSIX flock")
@pytest.mark.parametrize("command", list(WRITERS))
def test_a_second_writer_of_an_output_directory_fails_clearly(command, tmp_path, capsys, monkeypatch):
    from rcnas.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "buffers.yaml").write_text(BUFFERS)
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=_env(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([*WRITERS[command], "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{out} is in use by rcnas pid {holder.pid}" in err, err
        assert sorted(p.name for p in out.iterdir()) == [".lock"], "the refused command wrote into the directory"
        if command != "search":
            return
        os.kill(holder.pid, signal.SIGKILL)  # however the holder dies, its lock goes with it
        holder.wait(timeout=30)
        assert main([*WRITERS[command], "--out", str(out)]) == 0
        assert (out / "arch.yaml").is_file()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX flock")
def test_only_the_holder_cleans_up_and_a_process_never_refuses_itself(tmp_path, monkeypatch):
    from rcnas.io import exclusive
    nested = tmp_path / "nested"
    # a comparison's worker holds its run, then runs the pipeline there
    with exclusive(nested), exclusive(nested):
        (nested / "x").write_text("1")
    assert (nested / "x").is_file()
    with exclusive(tmp_path / "empty"):  # a command that fails before any work leaves nothing
        pass
    assert not (tmp_path / "empty").exists()
    # two commands start on a new directory at once: both saw it missing; the one refused must not
    # remove the winner's lock (which would let a third in beside it)
    out = tmp_path / "race"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=_env(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        exists = Path.exists
        monkeypatch.setattr(Path, "exists", lambda self: False if self == out else exists(self))
        for _ in range(2):
            with pytest.raises(BadInput, match="in use by rcnas pid"), exclusive(out):
                pass
            assert (out / ".lock").is_file()
    finally:
        holder.kill()
        holder.wait()


POOL = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from rcnas.workers import exit_with_parent
if __name__ == "__main__":
    watch = sys.argv[1] == "watch"
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=exit_with_parent if watch else None,
                             initargs=(os.getpid(),) if watch else ()) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 600)
        time.sleep(600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("watch", [True, False])
def test_a_pool_worker_ends_when_its_parent_is_killed(watch, tmp_path):
    """A comparison's (or table build's) workers run for hours; killed, their parent cannot stop them,
    so they watch it. Without the watch (the control case) the worker would outlive its parent."""
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    parent = subprocess.Popen([sys.executable, str(script), "watch" if watch else "none"], stdout=subprocess.PIPE,
                              text=True, env=_env(tmp_path))
    worker = int(parent.stdout.readline())
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + (15 if watch else 3)
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(worker) is not watch
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


# ---------------------------------------------------------------- determinism (CPU, in process)

@pytest.mark.parametrize("searcher", ["rcnas", "evolution", "random", "tpe"])
def test_same_seed_same_search(searcher):
    import rcnas.api as rc

    def once(seed: int):
        res = rc.search(rc.Task("digits", "pgd", "wrn-16-2", "0.5x"), searcher=searcher, agent="scratch",
                        evaluations=10 if searcher == "rcnas" else 24, evaluator="toy", seed=seed, progress=False)
        return [(t.arch, t.reward, t.record.metrics) for t in res.trials], res.summary()

    (t1, s1), (t2, s2) = once(7), once(7)
    assert t1 == t2
    s1.pop("seconds"), s2.pop("seconds")
    assert s1 == s2
    if searcher != "tpe":
        assert once(8)[0] != t1  # the seed matters


def test_same_seed_same_trained_weights(tmp_path):
    import rcnas.api as rc
    from rcnas.space.arch import Arch
    arch = Arch.from_widths([1, 1, 1], [0.5, 0.5, 0.5])
    models = [rc.train(arch, "digits", out=tmp_path / f"m{i}", recipe="pgd", epochs=2, seed=3, device="cpu",
                       train_samples=150, progress=False)[0] for i in range(2)]
    a, b = (m.state_dict() for m in models)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _same_tensors(tmp_path / "m0" / "model.safetensors", tmp_path / "m1" / "model.safetensors")


# ---------------------------------------------------------------- atomic writes

def _half_then_fail(real_write_text):
    def write_text(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError("disk full (simulated) after writing half")
    return write_text


def test_interrupted_write_json_leaves_old_or_nothing(tmp_path, monkeypatch):
    from rcnas.io import read_json, write_json
    target, fresh = tmp_path / "out.json", tmp_path / "new.json"
    old = {"version": 1, "values": list(range(100))}
    write_json(target, old)
    monkeypatch.setattr(Path, "write_text", _half_then_fail(Path.write_text))
    for path in (target, fresh):
        with pytest.raises(OSError):
            write_json(path, {"version": 2, "values": list(range(1000))})
    monkeypatch.undo()
    assert read_json(target) == old  # the old complete version
    assert not fresh.exists()        # or nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporaries left


def test_interrupted_write_by_keyboard_interrupt(tmp_path):
    from rcnas.io import atomic_write, read_json, write_json
    target = tmp_path / "x.json"
    write_json(target, [1, 2, 3])

    def writer(p: Path) -> None:
        p.write_text("[4, 5")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, writer)
    assert read_json(target) == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def _toy_agent_update(agent) -> None:
    """One meta-training update: two whole searches on the toy task, one policy-gradient step."""
    from rcnas.agent import AgentSearcher
    from rcnas.agent.meta import search_return
    from rcnas.search.driver import run_search
    from rcnas.testing.toy import toy_context
    rollouts, returns = [], []
    for seed in range(2):
        s = AgentSearcher(toy_context(), seed=seed, agent=agent, learn=False)
        run_search(s, 3, progress=False)
        rollouts.append((s.episode, s.steps))
        returns.append(search_return(s.episode.curve(), 3))
    agent.meta_update(rollouts, returns)


def test_interrupted_agent_save_keeps_previous_agent(tmp_path, monkeypatch):
    import rcnas.agent.agent as agent_mod
    from rcnas.agent.agent import Agent
    agent = Agent(seed=0)
    _toy_agent_update(agent)
    agent.save(tmp_path, extra={"note": "old"})
    before = {k: v.clone() for k, v in agent.net.state_dict().items()}
    _toy_agent_update(agent)  # the agent moves on; saving its new state is interrupted

    real = agent_mod.save_file

    def half_written(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError("killed mid-write (simulated)")

    monkeypatch.setattr(agent_mod, "save_file", half_written)
    with pytest.raises(OSError):
        agent.save(tmp_path, extra={"note": "new"})
    monkeypatch.undo()
    loaded, meta = Agent.load(tmp_path)
    assert meta["note"] == "old" and loaded.updates == 1
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in before.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.json", "agent.safetensors"]


def test_agent_save_killed_between_its_two_files_loads_consistently(tmp_path, monkeypatch):
    """Weights are renamed into place first; if agent.json is not rewritten after them, the metadata
    in the weights' own header still pairs the right update count with the weights."""
    import rcnas.agent.agent as agent_mod
    from rcnas.agent.agent import Agent
    agent = Agent(seed=0)
    _toy_agent_update(agent)
    agent.save(tmp_path)
    _toy_agent_update(agent)
    monkeypatch.setattr(agent_mod, "write_json", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        agent.save(tmp_path)
    monkeypatch.undo()
    assert json.loads((tmp_path / "agent.json").read_text())["updates"] == 1  # the stale mirror
    loaded, meta = Agent.load(tmp_path)
    assert loaded.updates == meta["updates"] == 2
    assert all(torch.equal(loaded.net.state_dict()[k], v) for k, v in agent.net.state_dict().items())
    assert all(torch.equal(loaded.opt.state_dict()["state"][i]["exp_avg"], s["exp_avg"])
               for i, s in agent.opt.state_dict()["state"].items())


# ---------------------------------------------------------------- safe loading

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"correct": _Evil(marker), "ratios": torch.zeros(3)}, path)
    return path


def test_crafted_pickle_is_not_a_usable_pickle_here_either(tmp_path):
    """Sanity check of the exploit itself: an unsafe loader would run it."""
    marker = tmp_path / "MARKER"
    path = _evil_pickle(tmp_path / "x.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_crafted_pickle_as_eval_state_is_refused(tmp_path, capsys):
    from rcnas.artifacts import save_model_dir
    from rcnas.cli import main
    from rcnas.data import dataset_info
    from rcnas.models import build_model
    from rcnas.space.arch import Arch
    info = dataset_info("digits")
    torch.manual_seed(0)
    model = build_model(Arch.from_widths([1, 1, 1], [0.5, 0.5, 0.5]), info.num_classes, info.channels,
                        info.mean, info.std)
    save_model_dir(model, tmp_path / "m", dataset="digits")
    argv = ["eval", str(tmp_path / "m"), "--attacks", "clean,fgsm", "--samples", "40", "--device", "cpu", "--json"]
    assert main(argv) == 0
    states = list((tmp_path / "m" / "eval-state").rglob("fgsm.pt"))
    assert len(states) == 1
    marker = tmp_path / "MARKER"
    _evil_pickle(states[0], marker)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1].split("\r")[-1]  # after the progress bars
    assert last.startswith("rcnas: error: ") and "fgsm.pt" in last and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["model.safetensors", "checkpoints/last.safetensors", "agent.safetensors",
                                   "teacher.safetensors"])
def test_crafted_pickle_where_weights_are_expected(where, tmp_path):
    from rcnas.agent.agent import Agent
    from rcnas.artifacts import load_model_dir
    from rcnas.models import build_model
    from rcnas.space.arch import Arch
    from rcnas.train import load_weights
    from rcnas.train.checkpoint import read_snapshot
    marker = tmp_path / "MARKER"
    d = tmp_path / "d"
    if where == "model.safetensors":
        model = build_model(Arch.from_widths([1, 1, 1], [0.5, 0.5, 0.5]), 10, 1, [0.5], [0.5])
        from rcnas.artifacts import save_model_dir
        save_model_dir(model, d, dataset="digits")
        _evil_pickle(d / where, marker)
        load = lambda: load_model_dir(d)
    elif where == "agent.safetensors":
        Agent(seed=0).save(d)
        _evil_pickle(d / where, marker)
        load = lambda: Agent.load(d)
    elif where == "teacher.safetensors":
        model = build_model(Arch.wrn(16, 2), 10, 1, [0.5], [0.5])
        _evil_pickle(d / where, marker)
        load = lambda: load_weights(model, d / where)
    else:
        _evil_pickle(d / where, marker)
        load = lambda: read_snapshot(d / where)
    with pytest.raises(BadInput):
        load()
    assert not marker.exists()


def test_crafted_pickle_as_cifar_batch_is_refused(tmp_path):
    from rcnas.data.loaders import read_cifar_batch
    marker = tmp_path / "MARKER"
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f)
    with pytest.raises(BadInput, match="refusing"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_crafted_pickle_as_train_checkpoint_via_cli(tmp_path, capsys):
    from rcnas.cli import main
    marker = tmp_path / "MARKER"
    _evil_pickle(tmp_path / "m" / "checkpoints" / "last.safetensors", marker)
    rc = main(["train", "--depths", "1", "1", "1", "--widths", "0.5", "0.5", "0.5", "--epochs", "1",
               "--out", str(tmp_path / "m")])
    assert rc == 2 and not marker.exists()
    assert "last.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("reader", ["read_yaml", "load_yaml", "task_cli"])
def test_yaml_python_tags_are_rejected_without_running(reader, tmp_path, capsys):
    from rcnas.config import load_yaml
    from rcnas.io import read_yaml
    from rcnas.tasks import Task
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.yaml"
    path.write_text(f"dataset: !!python/object/apply:os.system ['touch {marker}']\n")
    if reader == "task_cli":
        from rcnas.cli import main
        assert main(["search", "--task", str(path), "--evaluator", "toy", "--out", str(tmp_path / "o")]) == 2
        assert "x.yaml" in capsys.readouterr().err
    else:
        with pytest.raises(BadInput, match="x.yaml"):
            read_yaml(path) if reader == "read_yaml" else load_yaml(Task, path)
    assert not marker.exists()


def test_no_unsafe_loader_in_the_sources():
    """Every torch.load is weights_only=True, every np.load allow_pickle=False, YAML is read with the
    safe loader only, and plain pickle is used by the CIFAR reader's restricted unpickler alone."""
    import re

    import rcnas
    root = Path(rcnas.__file__).parent
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"\btorch\.load\(|\bnp\.load\(|\byaml\.(?:load|unsafe_load|full_load)\(|"
                             r"\bpickle\.loads?\(|\bUnpickler\(", text):
            call = text[m.start(): text.find(")", m.end()) + 1]
            safe = {"torch.load(": "weights_only=True", "np.load(": "allow_pickle=False"}.get(m.group())
            if safe is None or safe not in call:  # yaml.load & co, and bare pickle: never
                problems.append(f"{path.relative_to(root)}: {call}")
    assert not problems, problems


# ---------------------------------------------------------------- the teacher cache: one writer per entry

def test_a_teacher_being_written_by_another_process_is_waited_for_and_loaded(tmp_path) -> None:
    """While one process holds a teacher's cache entry, another asking for that teacher waits, then
    loads what the first wrote instead of training (and writing) a second teacher beside it."""
    import hashlib
    cache = tmp_path / "cache"
    holder = (
        "import sys, time, torch\n"
        "from dataclasses import replace\n"
        "from rcnas.io import exclusive\n"
        "from rcnas.models import build_model\n"
        "from rcnas.space.teachers import teacher_arch\n"
        "from rcnas.teacher import DEFAULT_TEACHER_TRAINING, teacher_dir\n"
        "from rcnas.train.checkpoint import save_weights\n"
        "from pathlib import Path\n"
        f"out = teacher_dir('digits', 'wrn-10-1', replace(DEFAULT_TEACHER_TRAINING, epochs=1), Path({str(cache)!r}))\n"
        "with exclusive(out):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(4)\n"
        "    torch.manual_seed(123)\n"
        "    save_weights(build_model(teacher_arch('wrn-10-1'), 10, 1, [0.3], [0.4]), out / 'teacher.safetensors')\n")
    asker = (
        "import hashlib\n"
        "from pathlib import Path\n"
        "from rcnas.teacher import get_teacher\n"
        f"m = get_teacher('digits', 'wrn-10-1', epochs=1, cache=Path({str(cache)!r}), progress=False, device='cpu')\n"
        "print(hashlib.sha256(b''.join(t.detach().numpy().tobytes() for t in m.state_dict().values())).hexdigest())\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=env)
    assert first.stdout.readline().strip() == "held"
    second = subprocess.run([sys.executable, "-c", asker], capture_output=True, text=True, env=env, timeout=300,
                            check=False)
    assert first.wait(timeout=60) == 0 and second.returncode == 0, second.stderr
    from rcnas.models import build_model
    from rcnas.space.teachers import teacher_arch
    torch.manual_seed(123)
    written = build_model(teacher_arch("wrn-10-1"), 10, 1, [0.3], [0.4])
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in written.state_dict().values())).hexdigest()
    assert second.stdout.strip().splitlines()[-1] == digest  # the first process's teacher, loaded, not trained


def test_temporaries_of_a_killed_save_are_removed_by_the_next_holder(tmp_path) -> None:
    """A save killed between writing its temporary and renaming it leaves `.NAME.XXXX.tmp` behind;
    the next process to hold the directory (its only writer) removes them, and nothing else."""
    from rcnas.io import atomic_write, exclusive
    out = tmp_path / "run"
    stale = [out / ".agent.safetensors.k2j4x9.tmp", out / "models" / "rcnas" / ".card.json.a1b2c3.tmp"]
    keep = [out / "agent.safetensors", out / "notes.tmp", out / "models" / "rcnas" / "card.json"]
    for p in stale + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    with exclusive(out):
        assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
        atomic_write(out / "new.json", lambda tmp: tmp.write_text("{}"))  # its own temporary: renamed, gone
    assert sorted(p.name for p in out.iterdir()) == [".lock", "agent.safetensors", "models", "new.json", "notes.tmp"]
