"""`rcnas` command line: thin commands over `rcnas.api` (contract: shared/cli.md).

Bad input prints one line and exits 2; a failure while running exits 1; `--json` prints one JSON
object on stdout while progress and logs go to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from rcnas import __version__
from rcnas.errors import BadInput, RunFailure


def _arch_from_args(args: argparse.Namespace):
    """The architecture, and the task setting its file records (`searched_for`; {} when none)."""
    from rcnas.io import read_yaml
    from rcnas.space.arch import Arch, searched_for
    from rcnas.space.teachers import teacher_arch
    if getattr(args, "arch", None):
        data = read_yaml(args.arch)
        return Arch.from_dict(data), searched_for(data)
    if getattr(args, "teacher", None):
        return teacher_arch(args.teacher), {}
    if getattr(args, "depths", None) and getattr(args, "widths", None):
        return Arch.from_widths(args.depths, args.widths, args.blocks or ["basic"] * 3), {}
    raise BadInput("give an architecture: --teacher NAME, --arch FILE.yaml, or --depths D1 D2 D3 --widths W1 W2 W3")


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        from rcnas.io import json_safe
        print(json.dumps(json_safe(obj), allow_nan=False))
    else:
        print(text)


def cmd_cost(args: argparse.Namespace) -> None:
    from rcnas.cost import cost, format_macs
    arch, found = _arch_from_args(args)  # a search's arch.yaml says what input it was for
    for flag, key, default in (("input_size", "input_size", 32), ("channels", "channels", 3),
                               ("classes", "num_classes", 10)):
        if getattr(args, flag) is None:
            setattr(args, flag, found.get(key, default))
    c = cost(arch, args.input_size, args.channels, args.classes)
    _emit(args, {"macs": c.macs, "params": c.params, "arch": arch.to_dict()},
          f"{arch}\nMACs {c.macs} ({format_macs(c.macs)}), params {c.params} ({c.params / 1e6:.3f}M) "
          f"at {args.input_size}x{args.input_size}x{args.channels}, {args.classes} classes")


def cmd_teacher_list(args: argparse.Namespace) -> None:
    from rcnas.cost import arch_cost, format_macs
    from rcnas.data import dataset_shape
    from rcnas.space.teachers import DEFAULT_TEACHER, TEACHERS
    size, channels, classes = dataset_shape(args.dataset, args.data_dir)  # a built-in dataset needs no files
    rows = []
    for name in TEACHERS.names():
        c = arch_cost(TEACHERS.get(name), size, channels, classes)
        rows.append({"name": name, "macs": c.macs, "params": c.params,
                     "default": DEFAULT_TEACHER.get(args.dataset) == name})
    _emit(args, {"dataset": args.dataset, "teachers": rows}, "\n".join(
        f"{r['name']:<10} {format_macs(r['macs']):>7} MACs {r['params'] / 1e6:8.2f}M params"
        f"{'  (default)' if r['default'] else ''}" for r in rows))


def cmd_teacher_train(args: argparse.Namespace) -> None:
    from rcnas.api import train_teacher
    from rcnas.data import load_dataset
    from rcnas.train import accuracy
    model = train_teacher(args.dataset, args.teacher, epochs=args.epochs, data_dir=args.data_dir,
                          seed=args.seed, cache=args.out, device=args.device)
    test = load_dataset(args.dataset, args.data_dir).test
    acc = accuracy(model, test)
    _emit(args, {"dataset": args.dataset, "teacher": model.arch.to_dict(), "test_acc": acc},
          f"teacher {args.teacher or 'default'} on {args.dataset}: clean test accuracy {acc:.4f}")


def cmd_train(args: argparse.Namespace) -> None:
    from rcnas.api import train
    arch, found = _arch_from_args(args)
    dataset = args.dataset or found.get("dataset", "digits")
    # a searched network starts from its teacher's weights, as in `rcnas run`, unless told otherwise
    teacher = found.get("teacher") if found.get("dataset") == dataset and not args.from_scratch else None
    if found and teacher is None and not args.from_scratch:
        print(f"note: {args.arch} was searched on {found.get('dataset')}, not {dataset}: training from scratch",
              file=sys.stderr)
    _, result = train(arch, dataset, out=args.out, recipe=args.recipe, epochs=args.epochs, eps=args.eps,
                      seed=args.seed, data_dir=args.data_dir, device=args.device, teacher=teacher,
                      teacher_epochs=found.get("teacher_epochs") if teacher else None,
                      train_samples=args.train_samples, bf16=args.bf16, channels_last=args.channels_last)
    _emit(args, {"out": str(args.out), "best_epoch": result.best_epoch, "val_clean": result.val_clean,
                 "val_robust": result.val_robust, "guard_tripped": result.guard_tripped},
          f"trained {arch} -> {args.out} (best epoch {result.best_epoch}: val clean {result.val_clean:.4f}, "
          f"val robust {result.val_robust:.4f})")


def cmd_eval(args: argparse.Namespace) -> None:
    from rcnas.api import evaluate
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    card = evaluate(args.model_dir, args.dataset, attacks=attacks, eps=args.eps, seed=args.seed,
                    data_dir=args.data_dir, device=args.device, samples=args.samples, aa_samples=args.aa_samples)
    obj = {"clean": card.clean_acc, "pgd20": card.pgd20_acc, "cw40": card.cw40_acc, "aa": card.aa_acc,
           "aa_only": card.aa_only_acc, **card.other_acc, "worst_case": card.worst_case_acc,
           "macs": card.macs, "params": card.params, "latency_ms_cpu": card.latency_ms_cpu,
           "latency_method": card.latency_method, "lipschitz": card.lipschitz, "n": card.n_eval,
           "aa_n": card.aa_n_eval or card.n_eval, "eps": card.eps, "warnings": list(card.warnings)}
    _emit(args, obj, card.to_markdown())


def _task_from_args(args: argparse.Namespace):
    from rcnas.config import load_yaml
    from rcnas.tasks import Task
    flags = {k: getattr(args, k) for k in ("dataset", "attack", "teacher", "budget", "eps")
             if getattr(args, k) is not None}
    if args.task:  # a flag given beside the file overrides the file's value, as `run --config` does
        return replace(load_yaml(Task, args.task), **flags)
    if not args.dataset:
        raise BadInput("give a task: --task FILE.yaml, or --dataset NAME [--attack --teacher --budget]")
    return Task(**flags)


def _proxy_from_args(args: argparse.Namespace):
    from rcnas.config import load_yaml
    from rcnas.search.evaluator import ProxyConfig
    proxy = load_yaml(ProxyConfig, args.proxy) if args.proxy else ProxyConfig()
    changes = {k: v for k, v in (("epochs", args.proxy_epochs), ("train_samples", args.proxy_train_samples))
               if v is not None}
    return replace(proxy, **changes)


def cmd_search(args: argparse.Namespace) -> None:
    from rcnas.api import search
    from rcnas.cost import format_macs
    task = _task_from_args(args)
    res = search(task, searcher=args.searcher, agent=args.agent, evaluations=args.evaluations,
                 evaluator=args.evaluator, proxy=_proxy_from_args(args), executor=args.executor,
                 ray_address=args.ray_address, store=args.store, seed=args.seed, out=args.out,
                 reward=args.reward, data_dir=args.data_dir, device=args.device)
    s = res.summary()
    _emit(args, s, f"best of {s['evaluations']} evaluations ({s['new_evaluations']} new): {res.best.arch}\n"
                   f"MACs {format_macs(s['macs'])} of budget {format_macs(s['budget_macs'])} "
                   f"(teacher {format_macs(s['teacher_macs'])}), reward {s['reward']:.4f}, "
                   f"validation metrics {json.dumps({k: round(v, 4) for k, v in s['metrics'].items()})}\n"
                   f"wrote {args.out}/arch.yaml")


def cmd_meta_train(args: argparse.Namespace) -> None:
    from rcnas.agent.agent import AgentConfig
    from rcnas.api import meta_train
    from rcnas.config import from_dict
    from rcnas.io import read_yaml
    from rcnas.tasks import Buffers
    raw = read_yaml(args.buffers) or {}
    if not isinstance(raw, dict):
        raise BadInput(f"{args.buffers}: expected a mapping with datasets, attacks, teachers, budgets")
    agent_cfg = from_dict(AgentConfig, raw.pop("agent", {}) or {}, where=f"{args.buffers}.agent")
    buffers = from_dict(Buffers, raw, where=str(args.buffers))
    agent = meta_train(buffers, args.out, episodes=args.episodes, seed=args.seed, evaluator=args.evaluator,
                       proxy=_proxy_from_args(args), agent_cfg=agent_cfg, store=args.store,
                       reward=args.reward, data_dir=args.data_dir, device=args.device)
    _emit(args, {"out": str(args.out), "updates": agent.updates},
          f"meta-trained agent: {agent.updates} updates -> {args.out}")


def cmd_run(args: argparse.Namespace) -> None:
    from rcnas.config import from_dict
    from rcnas.io import read_yaml
    from rcnas.pipeline import RunConfig, run_pipeline
    base = from_dict(RunConfig, read_yaml(args.config) or {}, where=args.config) if args.config else RunConfig()
    flags = {"dataset": args.dataset, "seed": args.seed, "final_epochs": args.epochs, "budget": args.budget,
             "attack": args.attack, "evaluations": args.evaluations, "eval_samples": args.eval_samples,
             "agent": args.agent, "device": None if args.device == "auto" else args.device, "jobs": args.jobs}
    cfg = replace(base, **{k: v for k, v in flags.items() if v is not None})  # flags given override the file
    if args.aa_samples is not None:
        cfg = replace(cfg, aa_samples=args.aa_samples or None)  # 0: the whole test split
    if args.no_teacher_at:
        cfg = replace(cfg, teacher_at=False)
    summary = run_pipeline(cfg, out=args.out, data_dir=args.data_dir)
    _emit(args, summary, _run_table(summary) + f"\nfull report: {Path(args.out) / 'report.md'}")


def _run_table(summary: dict[str, Any]) -> str:
    from rcnas.cost import format_macs
    task = summary["task"]
    first = next(iter(summary["models"].values()))
    aa_n = first.get("aa_n_eval") or first["n_eval"]
    aa_header = f"AA@{aa_n}"
    lines = [(f"{task['dataset']}: {task['attack']} at eps {summary['eps']:g}, teacher {summary['teacher']} "
              f"({format_macs(summary['teacher_macs'])} MACs), budget {format_macs(summary['budget_macs'])} MACs"),
             f"{'model':<12} {'MACs':>7} {'clean':>7} {'PGD-20':>7} {'CW-40':>7} {aa_header:>8}"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    for name, c in summary["models"].items():
        lines.append(f"{name:<12} {format_macs(c['macs']):>7} {pct(c['clean_acc']):>7} {pct(c['pgd20_acc']):>7} "
                     f"{pct(c['cw40_acc']):>7} {pct(c['aa_acc']):>8}")
    lines.append(f"(test split, n={first['n_eval']}; {aa_header} = AutoAttack's per-sample worst case with the "
                 f"other attacks on a stratified {aa_n} of those images)")
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> None:
    from rcnas.report import write_report
    path = write_report(args.run_dir)
    print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    from rcnas.bench import run_bench
    path = run_bench(args.which, out=args.out, seeds=args.seeds, quick=args.quick, config=args.config,
                     jobs=args.jobs, summarize_only=args.summarize_only, data_dir=args.data_dir,
                     device=args.device, scale=args.scale, agent=args.agent, table=args.table,
                     neighbours=args.neighbours)
    print(f"wrote {path}")


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line naming what is wrong and where the usage is, not a screen of usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rcnas", description="Reinforced Compressive NAS: the most robust "
                                "sub-network of a teacher within a MACs budget.")
    p.add_argument("--version", action="version", version=f"rcnas {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, json_flag: bool = True) -> None:
        sp.add_argument("--data-dir", help="where local datasets live (else $RCNAS_DATA)")
        sp.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    def arch_args(sp: argparse.ArgumentParser, teacher: bool = True) -> None:
        if teacher:
            sp.add_argument("--teacher", help="a named teacher (rcnas teacher list)")
        sp.add_argument("--arch", help="architecture YAML (rcnas's own or a RobustResNet config)")
        sp.add_argument("--depths", type=int, nargs=3, metavar="D")
        sp.add_argument("--widths", type=float, nargs=3, metavar="W")
        sp.add_argument("--blocks", nargs=3, metavar="B", help="basic or robust per stage")

    sp = sub.add_parser("cost", help="exact MACs and parameters of an architecture")
    arch_args(sp)
    sp.add_argument("--input-size", type=int, help="default: what --arch was searched for, else 32")
    sp.add_argument("--channels", type=int, help="default: what --arch was searched for, else 3")
    sp.add_argument("--classes", type=int, help="default: what --arch was searched for, else 10")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_cost)

    tp = sub.add_parser("teacher", help="list or train the standard (non-robust) teachers")
    tsub = tp.add_subparsers(dest="teacher_command", metavar="ACTION")
    sp = tsub.add_parser("list", help="named teachers with their MACs and parameters for a dataset")
    sp.add_argument("--dataset", default="digits")
    common(sp)
    sp.set_defaults(fn=cmd_teacher_list)
    sp = tsub.add_parser("train", help="train (or load the cached) standard teacher")
    sp.add_argument("--dataset", default="digits")
    sp.add_argument("--teacher", help="default: the dataset's default teacher")
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", help="cache root (default $RCNAS_CACHE or ~/.cache/rcnas)")
    common(sp)
    sp.set_defaults(fn=cmd_teacher_train)

    sp = sub.add_parser("train", help="final adversarial training of an architecture (resumable)")
    arch_args(sp)
    sp.add_argument("--dataset", help="default: the dataset --arch was searched on, else digits")
    sp.add_argument("--from-scratch", action="store_true",
                    help="random initial weights (default for a searched --arch: its teacher's, inherited)")
    sp.add_argument("--recipe", default="trades", help="trades (default, the paper's), pgd, fgsm-rs, n-fgsm, standard")
    sp.add_argument("--epochs", type=int, default=20)
    sp.add_argument("--eps", type=float)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--train-samples", type=int, help="train on a stratified subset (CPU budgets)")
    sp.add_argument("--bf16", action="store_true", help="bf16 autocast of the training forward pass")
    sp.add_argument("--channels-last", action="store_true")
    sp.add_argument("--out", required=True)
    common(sp)
    sp.set_defaults(fn=cmd_train)

    sp = sub.add_parser("eval", help="clean / PGD-20 / CW-40 / AutoAttack accuracy on the test split")
    sp.add_argument("model_dir")
    sp.add_argument("--dataset", help="default: the dataset the model was trained on")
    sp.add_argument("--attacks", default="clean,pgd20,cw40,aa")
    sp.add_argument("--eps", type=float)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--samples", type=int, help="evaluate a stratified subset of the test split")
    sp.add_argument("--aa-samples", type=int, help="run AutoAttack on a stratified subset of this size")
    common(sp)
    sp.set_defaults(fn=cmd_eval)

    def search_common(sp: argparse.ArgumentParser, evaluator: str = "train", reward: str = "budget") -> None:
        sp.add_argument("--evaluator", default=evaluator, help=f"train (real proxy training), table (the shipped "
                        f"tabular benchmarks), toy (default: {evaluator})")
        sp.add_argument("--proxy", help="YAML of the proxy training (rcnas.search.evaluator.ProxyConfig)")
        sp.add_argument("--proxy-epochs", type=int)
        sp.add_argument("--proxy-train-samples", type=int)
        sp.add_argument("--reward", default=reward, help=f"budget, n2n, accuracy (default: {reward})")
        sp.add_argument("--store", help="SQLite store of evaluations (default OUT/store.sqlite)")
        sp.add_argument("--seed", type=int, default=0)

    sp = sub.add_parser("meta-train", help="meta-train the agent over task settings sampled from buffers")
    sp.add_argument("--buffers", required=True, help="YAML: datasets, attacks, eps_scales, teachers, budgets, held_out, agent")
    sp.add_argument("--out", required=True)
    sp.add_argument("--episodes", type=int, default=4000, help="whole searches to learn from (default 4000)")
    search_common(sp, evaluator="table", reward="accuracy")
    common(sp)
    sp.set_defaults(fn=cmd_meta_train)

    sp = sub.add_parser("search", help="find the best sub-network for one task setting")
    sp.add_argument("--task", help="task YAML (dataset, attack, teacher, budget, eps)")
    sp.add_argument("--dataset")
    sp.add_argument("--attack", help="default: pgd")
    sp.add_argument("--teacher")
    sp.add_argument("--budget", help="MACs (5G, 300M, integer) or a fraction of the teacher (0.5x; the default)")
    sp.add_argument("--eps", type=float)
    sp.add_argument("--searcher", default="rcnas",
                    help="rcnas, random, evolution, tpe, uniform, last-stage, compound")
    sp.add_argument("--agent", default="pretrained", help="pretrained, scratch, or an AGENT_DIR")
    sp.add_argument("--evaluations", type=int, default=20)
    sp.add_argument("--executor", default="local", help="local or ray")
    sp.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local one)")
    sp.add_argument("--out", required=True)
    search_common(sp)
    common(sp)
    sp.set_defaults(fn=cmd_search)

    sp = sub.add_parser("run", help="the whole pipeline: teacher, agent, search, final training, evaluation, report")
    sp.add_argument("--config", help="a RunConfig YAML (the keys of rcnas.pipeline.RunConfig); flags override it")
    sp.add_argument("--dataset", help="default: digits")
    sp.add_argument("--attack", help="the task's attack (default: pgd)")
    sp.add_argument("--budget", help="MACs budget: 0.5x (of the teacher), 5M, 2.5e6 (default: 0.5x)")
    sp.add_argument("--out", default="runs/default")
    sp.add_argument("--seed", type=int)
    sp.add_argument("--agent", help="pretrained (default), scratch, or an AGENT_DIR")
    sp.add_argument("--aa-samples", type=int,
                    help="AutoAttack on a stratified subset of this size (0: the whole test split; default 100)")
    sp.add_argument("--epochs", type=int, help="final adversarial-training epochs")
    sp.add_argument("--evaluations", type=int, help="candidate evaluations of the fine-tuning search")
    sp.add_argument("--eval-samples", type=int, help="evaluate on a stratified subset of the test split (default: all)")
    sp.add_argument("--jobs", type=int, help="networks trained and evaluated at once, one process and one thread "
                                             "each (default: one per CPU core; 1 on a GPU)")
    sp.add_argument("--no-teacher-at", action="store_true",
                    help="do not adversarially train the whole teacher as a reference (its longest job on a CPU)")
    common(sp)
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("report", help="markdown + plots for a run or bench directory")
    sp.add_argument("run_dir")
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("bench", help="benchmarks (JSON + markdown summary under bench/results)")
    sp.add_argument("which", nargs="?", default="all")
    sp.add_argument("--out", default="bench/results")
    sp.add_argument("--seeds", type=int)
    sp.add_argument("--quick", action="store_true", help="tiny settings, to check the harness")
    sp.add_argument("--config", help="comparison: a ComparisonConfig YAML (configs/comparison-*.yaml)")
    sp.add_argument("--jobs", type=int, help="comparison: runs at once, in separate processes; build-table: worker processes")
    sp.add_argument("--neighbours", type=int, help="make-run: also time it beside this many busy processes")
    sp.add_argument("--table", nargs="+", help="build-table: the tables to build (default: all; names as "
                    "DATASET_TEACHER_epsEPS, e.g. digits_wrn-16-1_eps0.15)")
    sp.add_argument("--summarize-only", action="store_true", help="comparison: only summarize finished runs")
    sp.add_argument("--data-dir", help="comparison: where local datasets live (else $RCNAS_DATA)")
    sp.add_argument("--device", help="throughput, fidelity: cpu, cuda, cuda:N (default: cpu)")
    sp.add_argument("--agent", help="search, adaptation: the meta-trained agent (default: the shipped one)")
    sp.add_argument("--scale", choices=("digits", "cifar"),
                    help="throughput: digits (the search's models) or cifar (WRN-16-4/WRN-28-10 at 32x32)")
    sp.set_defaults(fn=cmd_bench)
    return p


def _one_line(message: str, limit: int = 400) -> str:
    """An error as one line of at most `limit` characters, whatever value it quotes."""
    message = " ".join(message.split())
    return message if len(message) <= limit else f"{message[:limit - 100]} ... {message[-90:]}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 on bad usage, 0 on --help/--version
        return int(e.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "fn"):
        parser.print_help()
        return 2 if args.command else 0
    try:
        if getattr(args, "seed", None) is not None:
            from rcnas.seeding import check_seed
            check_seed(args.seed, "--seed")
        if isinstance(getattr(args, "device", None), str):
            from rcnas.device import check_device_name
            check_device_name(args.device)
        args.fn(args)
    except BadInput as e:
        print(f"rcnas: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rcnas: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except RunFailure as e:
        print(f"rcnas: failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
