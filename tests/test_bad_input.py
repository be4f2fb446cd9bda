"""Bad input gives one line naming the problem (and the fix), exit status 2, and no traceback.

The cases run in-process through `rcnas.cli.main` (fast); two run as real subprocesses to prove the
process's exit status and a clean stderr. Searches use the toy evaluator, so nothing trains.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rcnas.cli import main

SEARCH = ["search", "--evaluator", "toy", "--agent", "scratch", "--evaluations", "3"]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _model_json(**changes) -> str:
    meta = {"format": 1, "arch": {"depths": [1, 1, 1], "widths": [0.5, 0.5, 0.5],
                                  "blocks": ["basic", "basic", "basic"]},
            "num_classes": 10, "in_channels": 1, "mean": [0.3], "std": [0.4], "dataset": "digits"}
    meta.update(changes)
    return json.dumps(meta)


def _digits_model(tmp: Path) -> str:
    """A real (untrained) 8x8 digits model directory."""
    from rcnas.artifacts import save_model_dir
    from rcnas.models import build_model
    from rcnas.space.arch import Arch
    model = build_model(Arch.from_widths([1, 1, 1], [0.5, 0.5, 0.5]), 10, 1, [0.3], [0.4])
    return str(save_model_dir(model, tmp / "digits-model", dataset="digits", input_size=8))


def _model_dir(tmp: Path, meta: str | None = None, weights: bytes | None = None) -> str:
    d = tmp / "m"
    _write(d / "model.json", meta if meta is not None else _model_json())
    if weights is not None:
        _write(d / "model.safetensors", weights)
    return str(d)


def _agent_dir(tmp: Path, *, json_text: str | None = None, tensors: bytes | None = None) -> Path:
    """A real (scratch) agent directory, then damaged as asked."""
    from rcnas.agent.agent import Agent
    d = tmp / "agent"
    Agent(seed=0).save(d)
    if json_text is not None:
        _write(d / "agent.json", json_text)
    if tensors is not None:
        _write(d / "agent.safetensors", tensors)
    return d


def _mismatched_agent_dir(tmp: Path) -> Path:
    """A readable agent.safetensors whose tensors do not fit the network agent.json describes."""
    import torch
    from safetensors.torch import save_file
    d = _agent_dir(tmp)
    save_file({"net.encode.0.weight": torch.zeros(3, 3)}, str(d / "agent.safetensors"))
    return d


def _future_store(tmp: Path) -> Path:
    path = tmp / "future.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        c.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    return path


def _idx_dir(tmp: Path) -> Path:
    """An MNIST data dir whose files are there but one has the wrong magic number."""
    d = tmp / "mnist"
    header = {3: b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2,
              1: b"\x00\x00\x08\x01" + (2).to_bytes(4, "big")}
    for name, nd in (("train-images-idx3-ubyte", 3), ("train-labels-idx1-ubyte", 1),
                     ("t10k-images-idx3-ubyte", 3), ("t10k-labels-idx1-ubyte", 1)):
        body = bytes(2 * 28 * 28) if nd == 3 else bytes(2)
        _write(d / name, header[nd] + body)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    _write(d / "train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + raw[4:])  # magic 0x0d03: wrong
    return tmp


def _npz_wrong_keys(tmp: Path) -> Path:
    path = tmp / "data.npz"
    np.savez(path, images=np.zeros((20, 8, 8), np.uint8), labels=np.arange(20) % 2)
    return path


def _corrupt_checkpoint_out(tmp: Path) -> Path:
    out = tmp / "model"
    _write(out / "checkpoints" / "last.safetensors", b"\x00garbage, not a safetensors file")
    return out


TINY = ["--depths", "1", "1", "1", "--widths", "0.5", "0.5", "0.5"]

# (id, argv from a tmp dir, a word the message must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # --- unknown names
    ("unknown-dataset", lambda t: SEARCH + ["--dataset", "imagenet-xl", "--out", str(t / "o")], "unknown dataset"),
    ("unknown-attack", lambda t: SEARCH + ["--dataset", "digits", "--attack", "pgx", "--out", str(t / "o")],
     "unknown attack"),
    ("unknown-attack-steps-on-clean", lambda t: SEARCH + ["--dataset", "digits", "--attack", "clean5",
                                                          "--out", str(t / "o")], "unknown attack"),
    ("unknown-teacher", lambda t: SEARCH + ["--dataset", "digits", "--teacher", "resnet50", "--out", str(t / "o")],
     "unknown teacher"),
    ("bad-wrn-depth", lambda t: SEARCH + ["--dataset", "digits", "--teacher", "wrn-27-2", "--out", str(t / "o")],
     "6n+4"),
    ("unknown-searcher", lambda t: SEARCH + ["--dataset", "digits", "--searcher", "hillclimb", "--out", str(t / "o")],
     "unknown searcher"),
    ("unknown-evaluator", lambda t: ["search", "--dataset", "digits", "--evaluator", "oracle", "--out", str(t / "o")],
     "unknown evaluator"),
    ("unknown-reward", lambda t: SEARCH + ["--dataset", "digits", "--reward", "profit", "--out", str(t / "o")],
     "unknown reward"),
    ("unknown-executor", lambda t: SEARCH + ["--dataset", "digits", "--executor", "slurm", "--out", str(t / "o")],
     "unknown executor"),
    ("unknown-recipe", lambda t: ["train", *TINY, "--recipe", "mixup", "--epochs", "1", "--out", str(t / "m")],
     "unknown recipe"),
    ("unknown-block", lambda t: ["cost", "--depths", "1", "1", "1", "--widths", "1", "1", "1",
                                 "--blocks", "basic", "basic", "bottleneck"], "unknown block"),
    ("unknown-teacher-cost", lambda t: ["cost", "--teacher", "vgg16"], "unknown teacher"),
    # --- budgets
    ("budget-too-small", lambda t: SEARCH + ["--dataset", "digits", "--budget", "1k", "--out", str(t / "o")],
     "raise --budget"),
    ("budget-garbage", lambda t: SEARCH + ["--dataset", "digits", "--budget", "abc", "--out", str(t / "o")],
     "cannot read budget"),
    ("budget-negative", lambda t: SEARCH + ["--dataset", "digits", "--budget=-5G", "--out", str(t / "o")],
     "positive"),
    ("budget-zero-fraction", lambda t: SEARCH + ["--dataset", "digits", "--budget", "0x", "--out", str(t / "o")],
     "positive"),
    ("budget-below-one-mac", lambda t: SEARCH + ["--dataset", "digits", "--budget", "0.1", "--out", str(t / "o")],
     "less than one MAC"),
    ("budget-inf", lambda t: SEARCH + ["--dataset", "digits", "--budget", "infG", "--out", str(t / "o")],
     "positive"),
    # --- eps
    ("eps-zero", lambda t: SEARCH + ["--dataset", "digits", "--eps", "0", "--out", str(t / "o")], "eps"),
    ("eps-negative", lambda t: SEARCH + ["--dataset", "digits", "--eps=-0.1", "--out", str(t / "o")], "eps"),
    ("eps-above-one", lambda t: SEARCH + ["--dataset", "digits", "--eps", "8", "--out", str(t / "o")], "eps"),
    ("eps-nan", lambda t: SEARCH + ["--dataset", "digits", "--eps", "nan", "--out", str(t / "o")], "eps"),
    ("train-eps-absurd", lambda t: ["train", *TINY, "--eps", "255", "--epochs", "1", "--out", str(t / "m")], "eps"),
    ("train-epochs-zero", lambda t: ["train", *TINY, "--epochs", "0", "--out", str(t / "m")], "epochs"),
    # --- architecture YAML
    ("arch-bad-syntax", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [1, 1\nwidths: ]]"))],
     "not valid YAML"),
    ("arch-partial", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [1, 1, 1]\n"))], "widths"),
    ("arch-empty", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", ""))], "mapping"),
    ("arch-not-mapping", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "- 1\n- 2\n"))], "mapping"),
    ("arch-wrong-types", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [a, b, c]\n"
                                                                 "widths: [1, 1, 1]\n"))], "whole number"),
    ("arch-width-string", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [1, 1, 1]\n"
                                                                  "widths: [wide, 1, 1]\n"))], "width"),
    ("arch-two-stages", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [1, 1]\n"
                                                                "widths: [1, 1]\n"))], "3 values"),
    ("arch-unknown-key", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [1, 1, 1]\n"
                                                                 "widths: [1, 1, 1]\nkernel: 5\n"))], "kernel"),
    ("arch-robust-too-narrow", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "depths: [1, 1, 1]\nwidths: [0.5, 1, 1]\nblocks: [robust, basic, basic]\n"))], "robust block"),
    ("arch-width-not-multiple", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "depths: [1, 1, 1]\nwidths: [0.3, 1, 1]\n"))], "multiple of 1/16"),
    ("arch-cli-width-not-multiple", lambda t: ["cost", "--depths", "1", "1", "1", "--widths", "1", "0.01", "1"],
     "multiple of 1/32"),
    ("arch-zero-depth", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [0, 1, 1]\n"
                                                                "widths: [1, 1, 1]\n"))], "at least 1 block"),
    ("arch-robustresnet-bad-stem", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "model:\n  depth_configs: [1, 1, 1]\n  channel_configs: [32, 16, 32, 64]\n"))], "stem"),
    ("arch-robustresnet-partial", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "model:\n  depth_configs: [1, 1, 1]\n"))], "channel_configs"),
    ("arch-not-utf8", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", b"depths: \xff\xfe[1, 1, 1]\n"))],
     "a.yaml"),
    ("arch-width-infinite", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: [1, 1, 1]\n"
                                                                    "widths: [.inf, 1, 1]\n"))], "finite"),
    ("arch-depths-scalar", lambda t: ["cost", "--arch", str(_write(t / "a.yaml", "depths: 3\n"
                                                                   "widths: [1, 1, 1]\n"))], "depths"),
    ("arch-robustresnet-blocks-scalar", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "model:\n  depth_configs: [1, 1, 1]\n  channel_configs: [16, 16, 32, 64]\n"
                      "  block_types: basic_block\n"))], "block_types"),
    ("arch-python-tag", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "!!python/object/apply:os.system ['echo pwned']\n"))], "YAML"),
    ("arch-missing-file", lambda t: ["cost", "--arch", str(t / "nope.yaml")], "not found"),
    ("no-arch-given", lambda t: ["cost"], "give an architecture"),
    ("cost-input-size-zero", lambda t: ["cost", "--teacher", "wrn-16-2", "--input-size", "0"], "input size"),
    # --- task / proxy / buffers YAML
    ("task-unknown-key", lambda t: SEARCH + ["--task", str(_write(t / "t.yaml", "dataset: digits\nbudjet: 0.5x\n")),
                                             "--out", str(t / "o")], "budjet"),
    ("task-not-mapping", lambda t: SEARCH + ["--task", str(_write(t / "t.yaml", "[digits, pgd]\n")),
                                             "--out", str(t / "o")], "mapping"),
    ("task-wrong-type", lambda t: SEARCH + ["--task", str(_write(t / "t.yaml", "dataset: digits\neps: large\n")),
                                            "--out", str(t / "o")], "eps"),
    ("task-missing-file", lambda t: SEARCH + ["--task", str(t / "none.yaml"), "--out", str(t / "o")], "not found"),
    ("proxy-wrong-type", lambda t: SEARCH + ["--dataset", "digits", "--proxy",
                                             str(_write(t / "p.yaml", "epochs: two\n")), "--out", str(t / "o")],
     "integer"),
    ("buffers-empty-lists", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                       str(_write(t / "b.yaml", "attacks: []\n"))], "at least one"),
    ("buffers-unknown-attack", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                          str(_write(t / "b.yaml", "attacks: [pgd, deepfool]\n"))], "unknown attack"),
    ("buffers-unknown-key", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                       str(_write(t / "b.yaml", "teachrs: [wrn-16-2]\n"))], "teachrs"),
    ("buffers-not-mapping", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                       str(_write(t / "b.yaml", "just a string\n"))], "mapping"),
    ("buffers-bad-agent-config", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                            str(_write(t / "b.yaml", "agent:\n  evaluations: 0\n"))], "evaluations"),
    ("buffers-agent-negative-lr", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                             str(_write(t / "b.yaml", "agent:\n  lr: -1\n"))], "lr"),
    ("buffers-agent-zero-hidden", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                             str(_write(t / "b.yaml", "agent:\n  hidden: 0\n"))], "hidden"),
    ("buffers-eps-scale-zero", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"), "--buffers",
                                          str(_write(t / "b.yaml", "eps_scales: [0]\n"))], "eps_scales"),
    ("buffers-missing-file", lambda t: ["meta-train", "--evaluator", "toy", "--out", str(t / "a"),
                                        "--buffers", str(t / "nope.yaml")], "not found"),
    # --- model directories and checkpoints
    ("eval-missing-dir", lambda t: ["eval", str(t / "nomodel"), "--attacks", "clean"], "model.json"),
    ("eval-garbage-weights", lambda t: ["eval", _model_dir(t, weights=b"\x13\x37 not safetensors"),
                                        "--attacks", "clean"], "corrupt"),
    ("eval-missing-weights", lambda t: ["eval", _model_dir(t), "--attacks", "clean"], "not found"),
    ("eval-model-json-wrong-format", lambda t: ["eval", _model_dir(t, _model_json(format=7))], "format"),
    ("eval-digits-model-on-28x28", lambda t: ["eval", _digits_model(t), "--dataset", "mnist5k"],
     "trained on 8x8 images"),
    ("eval-model-json-list", lambda t: ["eval", _model_dir(t, "[1, 2, 3]")], "expected a mapping"),
    ("eval-model-json-no-classes", lambda t: ["eval", _model_dir(t, json.dumps(
        {k: v for k, v in json.loads(_model_json()).items() if k != "num_classes"}))], "missing required key 'num_classes'"),
    ("eval-model-json-classes-text", lambda t: ["eval", _model_dir(t, _model_json(num_classes="ten"))],
     "num_classes: expected an integer"),
    ("eval-model-json-training-text", lambda t: ["eval", _model_dir(t, _model_json(training="hello"))],
     "training: expected a mapping"),
    ("eval-model-json-std-zero", lambda t: ["eval", _model_dir(t, _model_json(std=[0.0]))], "std must be > 0"),
    ("eval-model-json-mean-length", lambda t: ["eval", _model_dir(t, _model_json(mean=[0.1, 0.2]))],
     "mean must be 1 finite numbers"),
    ("eval-model-json-not-json", lambda t: ["eval", _model_dir(t, "{format: 1")], "not valid JSON"),
    ("eval-model-json-bad-arch", lambda t: ["eval", _model_dir(t, _model_json(arch={"depths": [1, 1, 1]}))],
     "widths"),
    ("train-corrupt-checkpoint", lambda t: ["train", *TINY, "--recipe", "pgd", "--epochs", "1",
                                            "--out", str(_corrupt_checkpoint_out(t))], "corrupt"),
    # --- agents
    ("agent-missing-dir", lambda t: SEARCH[:3] + ["--dataset", "digits", "--agent", str(t / "noagent"),
                                                  "--out", str(t / "o")], "not found"),
    ("agent-json-wrong-format", lambda t: SEARCH[:3] + ["--dataset", "digits", "--agent",
                                                        str(_agent_dir(t, json_text='{"format": 42}')),
                                                        "--out", str(t / "o")], "agent"),
    ("agent-json-garbage", lambda t: SEARCH[:3] + ["--dataset", "digits", "--agent",
                                                   str(_agent_dir(t, json_text="{{{")), "--out", str(t / "o")],
     "not valid JSON"),
    ("agent-garbage-weights", lambda t: SEARCH[:3] + ["--dataset", "digits", "--agent",
                                                      str(_agent_dir(t, tensors=b"\x00" * 40)),
                                                      "--out", str(t / "o")], "corrupt"),
    ("agent-mismatched-weights", lambda t: SEARCH[:3] + ["--dataset", "digits", "--agent",
                                                         str(_mismatched_agent_dir(t)), "--out", str(t / "o")],
     "agent.safetensors"),
    # --- stores
    ("store-not-sqlite", lambda t: SEARCH + ["--dataset", "digits", "--store",
                                             str(_write(t / "s.sqlite", b"this is not a database" * 100)),
                                             "--out", str(t / "o")], "store"),
    ("store-future-schema", lambda t: SEARCH + ["--dataset", "digits", "--store", str(_future_store(t)),
                                                "--out", str(t / "o")], "incompatible"),
    # --- data files
    ("npz-wrong-keys", lambda t: SEARCH + ["--dataset", str(_npz_wrong_keys(t)), "--teacher", "wrn-16-2",
                                           "--out", str(t / "o")], "'x'"),
    ("npz-not-npz", lambda t: SEARCH + ["--dataset", str(_write(t / "d.npz", b"PK\x03\x04 broken zip")),
                                        "--out", str(t / "o")], "npz"),
    ("idx-wrong-magic", lambda t: SEARCH + ["--dataset", "mnist", "--data-dir", str(_idx_dir(t)),
                                            "--out", str(t / "o")], "magic number"),
    ("mnist-missing", lambda t: SEARCH + ["--dataset", "mnist", "--data-dir", str(t / "empty"),
                                          "--out", str(t / "o")], "not found"),
    # --- counts
    ("evaluations-zero", lambda t: SEARCH[:5] + ["--evaluations", "0", "--dataset", "digits", "--out", str(t / "o")],
     "evaluations"),
    # --- sizes and numbers without bounds: refused before anything is allocated or looped over
    ("depth-huge", lambda t: ["cost", "--depths", "1000000000000000", "1", "1", "--widths", "1", "1", "1"],
     "at most 1000 blocks"),
    ("width-1e300", lambda t: ["cost", "--depths", "1", "1", "1", "--widths", "1e300", "1", "1"],
     "digits)"),
    ("input-size-huge", lambda t: ["cost", "--teacher", "wrn-16-1", "--input-size", "100000000"], "1..100000"),
    ("seed-2-to-64", lambda t: SEARCH + ["--dataset", "digits", "--seed", "18446744073709551616",
                                         "--out", str(t / "o")], "--seed must be in 0..2147483647"),
    ("device-mps", lambda t: ["eval", str(t / "m"), "--device", "mps"], "unknown device 'mps'"),
    ("device-cuda-x", lambda t: SEARCH + ["--dataset", "digits", "--device", "cuda:x", "--out", str(t / "o")],
     "unknown device"),
    # --- YAML that would hang or exhaust memory if built, and values too long to print
    ("yaml-alias-bomb", lambda t: SEARCH + ["--task", str(_write(t / "t.yaml", "eps: [&a [x,x,x,x,x,x,x,x,x]" + "".join(
        f", &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(7)) + "]\n")),
        "--out", str(t / "o")], "expands to more than 1,000,000 values"),
    ("yaml-deep", lambda t: SEARCH + ["--task", str(_write(t / "t.yaml", "[" * 50_000 + "]" * 50_000)),
                                      "--out", str(t / "o")], "nests more than 64 levels"),
    ("yaml-int-5000-digits", lambda t: SEARCH + ["--task", str(_write(t / "t.yaml", "eps: " + "9" * 5000 + "\n")),
                                                 "--out", str(t / "o")], "number too long"),
    ("yaml-value-5000-chars", lambda t: ["cost", "--arch", str(_write(
        t / "a.yaml", "depths: [1, 1, 1]\nwidths: [1, 1, 1]\nblocks: [basic, basic, " + "x" * 5000 + "]\n"))],
     "unknown block type"),
]


def _check_one_line(rc: int, err: str, word: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("rcnas: error: "), err
    assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"


@pytest.mark.parametrize("make_argv,word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(make_argv, word, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = make_argv(tmp_path)
    capsys.readouterr()  # discard what building the inputs printed
    rc = main(argv + (["--json"] if argv and argv[0] in ("search", "cost", "eval") else []))
    out, err = capsys.readouterr()
    _check_one_line(rc, err, word)
    assert out == ""
    assert len(err) < 500  # whatever value the error quotes


def test_case_count():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_python_yaml_tag_never_runs(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    arch = _write(tmp_path / "a.yaml", f"!!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["cost", "--arch", str(arch)]) == 2
    assert not marker.exists()


def _subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rcnas.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("argv,word", [
    (["cost", "--arch", "missing.yaml"], "not found"),
    (["search", "--dataset", "digits", "--evaluator", "toy", "--budget", "1k", "--out", "o"], "raise --budget"),
], ids=["missing-arch", "budget-too-small"])
def test_real_process_exit_status_and_stderr(argv, word, tmp_path):
    p = _subprocess(argv, tmp_path)
    _check_one_line(p.returncode, p.stderr, word)
    assert p.stdout == ""


def test_argparse_usage_error_exits_2_in_one_line(capsys):
    for argv, word in ((["search", "--evaluations", "many"], "invalid int value: 'many'"),
                       (["bogus"], "invalid choice: 'bogus'")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and word in err and "--help" in err, err
