"""The Python API: one function per CLI command, same names and arguments.

    import rcnas.api as rc
    res = rc.search(rc.Task("digits", "pgd", "wrn-28-2", "0.5x"), searcher="rcnas", out="runs/s1")
    rc.train(res.best.arch, "digits", out="runs/s1/model", epochs=20)
    card = rc.evaluate("runs/s1/model", "digits")
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any


import rcnas.agent  # noqa: F401  (registers the `rcnas` searcher)
from rcnas.config import save_yaml, to_dict
from rcnas.cost import arch_cost, cost
from rcnas.errors import BadInput
from rcnas.io import exclusive_out, write_json, write_text, write_yaml
from rcnas.search.evaluator import EVALUATORS, Evaluator, ProxyConfig, TrainEvaluator
from rcnas.space.arch import SEARCHED_FOR, Arch, searched_for
from rcnas.tasks import Buffers, Task, resolve

PRETRAINED = Path(__file__).parent / "assets" / "agent-digits"


def train_teacher(dataset: str = "digits", teacher: str | None = None, *, epochs: int | None = None,
                  data_dir: str | None = None, seed: int = 0, cache: str | Path | None = None,
                  device: str = "auto", progress: bool = True, cached_only: str | None = None):
    """The standard (non-robust) teacher, trained once and cached (`cached_only`: see get_teacher)."""
    from rcnas.space.teachers import default_teacher
    from rcnas.teacher import get_teacher
    return get_teacher(dataset, teacher or default_teacher(dataset), data_dir=data_dir, epochs=epochs,
                       seed=seed, cache=Path(cache) if cache else None, device=device, progress=progress,
                       cached_only=cached_only)


@exclusive_out
def train(arch: Arch, dataset: str = "digits", *, out: str | Path, recipe: str = "trades",
          epochs: int = 20, eps: float | None = None, seed: int = 0, data_dir: str | None = None,
          device: str = "auto", progress: bool = True, init=None, teacher: str | None = None,
          teacher_epochs: int | None = None, train_samples: int | None = None,
          on_epoch: Callable[[dict], None] | None = None, **overrides: Any):
    """Final adversarial training of `arch` (resumable: rerun to continue). Writes a model dir.

    Starts from `teacher`'s weights, inherited into `arch` (the cached standard teacher of
    `dataset`, trained first if missing) as `rcnas run` does, or from the model `init`; with
    neither, from scratch. `on_epoch(row)` gets each epoch's history row as it ends.
    """
    if init is not None and teacher is not None:
        raise BadInput("give train either init (a model) or teacher (a name), not both")
    from rcnas.artifacts import save_model_dir
    from rcnas.data import load_dataset
    from rcnas.models import build_model
    from rcnas.seeding import seed_everything
    from rcnas.train import TrainConfig, fit
    out = Path(out)
    splits = load_dataset(dataset, data_dir)
    info = splits.info
    cfg = TrainConfig(recipe=recipe, epochs=epochs, eps=eps, seed=seed, device=device, **overrides)
    seed_everything(seed)
    if teacher is not None:
        from rcnas.models import inherit
        init = inherit(train_teacher(dataset, teacher, epochs=teacher_epochs, data_dir=data_dir,
                                     device=device, progress=progress), arch)
    model = init if init is not None else build_model(arch, info.num_classes, info.channels, info.mean, info.std)
    train_split = splits.train if train_samples is None else splits.train.subset(train_samples, seed=seed)
    result = fit(model, train_split, splits.val, cfg, info=info, out_dir=out / "checkpoints", progress=progress,
                 log=on_epoch)
    save_model_dir(model.cpu(), out, dataset=dataset, input_size=info.input_size, training=to_dict(cfg) | {
        "best_epoch": result.best_epoch, "val_clean": result.val_clean,
        "val_robust": result.val_robust if math.isfinite(result.val_robust) else None,  # standard training: none
        "guard_tripped": result.guard_tripped, "seconds": result.seconds, "train_samples": len(train_split),
        "init": f"teacher {teacher}" if teacher else ("a given model" if init is not None else "scratch")})
    write_json(out / "history.json", result.history)
    return model, result


def evaluate(model_dir: str | Path, dataset: str | None = None, *, attacks: tuple[str, ...] = (
        "clean", "pgd20", "cw40", "aa"), eps: float | None = None, seed: int = 0, data_dir: str | None = None,
        device: str = "auto", samples: int | None = None, aa_samples: int | None = None,
        progress: bool = True, name: str | None = None):
    """Robust evaluation on the test split; writes card.json and card.md into the model dir.

    `aa_samples` bounds AutoAttack's CPU time: it then runs (with the other attacks, for the
    per-sample worst case) on a stratified subset of that size, recorded in the card as aa_n_eval.
    """
    from rcnas.artifacts import load_model_dir
    from rcnas.data import load_dataset
    from rcnas.device import resolve_device
    from rcnas.evaluate import ModelCard, evaluate_robustness, latency_method, measure_latency
    model_dir = Path(model_dir)
    model, meta = load_model_dir(model_dir)
    dataset = dataset or meta.get("dataset", "digits")
    splits = load_dataset(dataset, data_dir)
    info = splits.info
    trained_size = meta.get("input_size")
    if (info.num_classes, info.channels) != (model.num_classes, model.in_channels) or \
            trained_size not in (None, info.input_size):
        size = f"{trained_size}x{trained_size} " if trained_size else ""
        raise BadInput(f"{model_dir} was trained on {size}images with {model.in_channels} channel(s) and "
                       f"{model.num_classes} classes, but {dataset} has {info.input_size}x{info.input_size} with "
                       f"{info.channels} and {info.num_classes}; pass the right --dataset")
    test = splits.test if samples is None else splits.test.subset(min(samples, len(splits.test)), seed=0)
    eps = eps if eps is not None else info.default_eps
    dev = resolve_device(device)
    state = model_dir / "eval-state"
    subset = "aa" in attacks and aa_samples is not None and aa_samples < len(test)
    result = evaluate_robustness(model, test.x, test.y, attacks=[a for a in attacks if not (subset and a == "aa")],
                                 eps=eps, seed=seed, device=dev, progress=progress,
                                 state_dir=state / f"{dataset}-eps{eps:g}-n{len(test)}")
    aa_n = None
    if subset:
        aa_test = test.subset(aa_samples, seed=0)
        aa = evaluate_robustness(model, aa_test.x, aa_test.y, attacks=attacks, eps=eps, seed=seed, device=dev,
                                 progress=progress, state_dir=state / f"{dataset}-eps{eps:g}-n{len(aa_test)}")
        result = replace(result, attacks=result.attacks | {k: aa.attacks[k] for k in ("aa", "aa_only")},
                         warnings=tuple(dict.fromkeys(result.warnings + aa.warnings)),
                         seconds=result.seconds | {"aa": sum(aa.attack_seconds.values())})
        aa_n = len(aa_test)
    c = arch_cost(model.arch, info.input_size, info.channels, info.num_classes)
    latency = measure_latency(model, (info.channels, info.input_size, info.input_size))
    card = ModelCard.from_result(result, name=name or model_dir.name, dataset=dataset, arch=model.arch,
                                 eps=eps, params=c.params, macs=c.macs, training=meta.get("training", {}),
                                 data_split="test" if samples is None else f"test[{len(test)}]",
                                 latency_ms_cpu=latency * 1000, latency_method=latency_method())
    if aa_n is not None:
        card = replace(card, aa_n_eval=aa_n)
    card.to_json(model_dir / "card.json")
    write_text(model_dir / "card.md", card.to_markdown())
    return card


# --- search ----------------------------------------------------------------------------------
def make_evaluator(name: str = "train", proxy: ProxyConfig | None = None, data_dir: str | None = None,
                   device: str = "cpu") -> Evaluator:
    if name == "train":
        return TrainEvaluator(proxy, data_dir, device)
    if name == "toy":
        import rcnas.testing  # registers the toy evaluator
    elif name == "table":
        import rcnas.search.table  # noqa: F401  (registers the tabular evaluator)
    return EVALUATORS.create(name)


def load_agent(agent: str | Path | None, seed: int = 0):
    """`pretrained` (shipped, meta-trained on the digits and MNIST-5k tables), `scratch`, or an agent directory."""
    from rcnas.agent import Agent
    if agent in (None, "scratch"):
        return Agent(seed=seed), {"agent": "scratch"}
    path = PRETRAINED if agent == "pretrained" else Path(agent)
    if agent == "pretrained" and not (path / "agent.json").is_file():
        raise BadInput("no pretrained agent ships with this install; use --agent scratch or meta-train one")
    loaded, _ = Agent.load(path)
    return loaded, {"agent": str(agent), "meta_updates": loaded.updates}


def _make_executor(name: str, **kwargs):
    from rcnas.search.driver import LocalExecutor
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from rcnas.search.ray_executor import RayExecutor
        return RayExecutor(**kwargs)
    raise BadInput(f"unknown executor {name!r}; known: local, ray")


@exclusive_out
def search(task: Task, *, searcher: str = "rcnas", agent: str | Path | None = "pretrained",
           evaluations: int = 20, evaluator: str = "train", proxy: ProxyConfig | None = None,
           executor: str = "local", ray_address: str | None = None, store: str | Path | None = None,
           seed: int = 0, out: str | Path | None = None, reward: str = "budget",
           data_dir: str | None = None, device: str = "cpu", progress: bool = True):
    """Find the best sub-network for one task setting; with `out`, write arch.yaml and the search log."""
    from rcnas.search.driver import SearchContext, run_search
    from rcnas.search.searchers import SEARCHERS
    from rcnas.search.store import Store
    resolved = resolve(task, data_dir)
    SEARCHERS.get(searcher)
    out = Path(out) if out is not None else None
    store_path = Path(store) if store else (out / "store.sqlite" if out else ":memory:")
    ev = make_evaluator(evaluator, proxy, data_dir, device)
    ctx = SearchContext(resolved, ev.space(resolved), ev, Store(store_path), seed=seed,
                        reward_name=reward, executor=_make_executor(executor, address=ray_address))
    extra: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    if searcher == "rcnas":
        kwargs["agent"], extra = load_agent(agent, seed)
    s = SEARCHERS.get(searcher)(ctx, seed=seed, **kwargs)
    log = []
    t0 = time.time()
    trials_path = out / "trials.jsonl" if out else None
    if trials_path is not None:  # a resumed search replays its store's trials into a fresh log
        write_text(trials_path, "")

    def on_trial(trial) -> None:
        row = {"trial": trial.index, "arch": trial.arch.to_dict(), "macs": trial.record.macs,
               "reward": trial.reward, "metrics": trial.record.metrics, "status": trial.record.status,
               "seconds": trial.record.seconds}
        log.append(row)
        if trials_path is not None:  # appended, not rewritten: the store, not this log, is the truth
            with trials_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    result = run_search(s, evaluations, progress=progress, on_trial=on_trial)
    result.extra.update({"task": to_dict(task), "teacher": resolved.teacher, "searcher": searcher,
                         "evaluator": evaluator, "seed": seed, "reward_name": reward,
                         "eps": resolved.eps, "seconds": time.time() - t0,  # this call's wall time
                         # what the evaluations cost when they ran (a resumed or store-sharing search
                         # replays cached ones in no time): the search's compute, resumes included
                         "evaluation_seconds": sum(r["seconds"] for r in log), **extra})
    summary = result.summary()
    if out is not None:
        best = result.best.arch
        teacher_epochs = (proxy or ProxyConfig()).teacher_epochs
        write_yaml(out / "arch.yaml", best.to_dict() | best.to_robustresnet(resolved.num_classes) | {
            SEARCHED_FOR: {"dataset": resolved.dataset, "input_size": resolved.input_size,
                           "channels": resolved.in_channels, "num_classes": resolved.num_classes,
                           "teacher": resolved.teacher, "teacher_epochs": teacher_epochs, "eps": resolved.eps,
                           "attack": resolved.attack, "budget_macs": resolved.budget_macs}})
        save_yaml(task, out / "task.yaml")
        write_json(out / "search.json", summary)
        if searcher == "rcnas":  # the agent as fine-tuned on this task setting
            s.agent.save(out / "agent", extra={"fine_tuned_on": to_dict(task)})
            write_json(out / "agent_history.json", s.history)
        try:
            from rcnas.report.plots import plot_reward_curve
            plot_reward_curve(log, out / "reward_curve.png", title=f"{searcher} on {task.dataset}")
        except ImportError:
            pass
    return result


@exclusive_out
def meta_train(buffers: Buffers, out: str | Path, *, episodes: int = 4000, seed: int = 0,
               evaluator: str = "table", proxy: ProxyConfig | None = None, agent_cfg=None,
               store: str | Path | None = None, reward: str = "accuracy", data_dir: str | None = None,
               device: str = "cpu", progress: bool = True):
    """Meta-train the agent over task settings sampled from `buffers` (never a held-out one); an
    episode is one whole search (see rcnas.agent.meta). Resumable: rerun to continue."""
    from rcnas.agent.meta import meta_train as run
    ev = make_evaluator(evaluator, proxy, data_dir, device)
    return run(buffers, out, ev, episodes=episodes, seed=seed, agent_cfg=agent_cfg, store=store, reward=reward,
               data_dir=data_dir, progress=progress)


def default_task(dataset: str = "digits") -> Task:
    """The task `rcnas run` solves: PGD objective, the dataset's default teacher, half its MACs."""
    return Task(dataset, "pgd", None, "0.5x")


__all__ = ["Task", "Buffers", "Arch", "ProxyConfig", "cost", "train_teacher", "train", "searched_for", "evaluate",
           "search", "meta_train", "load_agent", "default_task"]
