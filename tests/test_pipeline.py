"""End to end: `rcnas run` on real digits data with tiny settings (teacher -> search -> final
training -> evaluation -> report), and the contract of its outputs."""
from __future__ import annotations

import json

import pytest

from rcnas.cli import main


@pytest.mark.slow
def test_run_end_to_end_on_digits(tmp_path, capsys, monkeypatch) -> None:
    from rcnas.pipeline import RunConfig, run_pipeline
    out = tmp_path / "run"
    cfg = RunConfig(agent="scratch", evaluations=2, teacher_epochs=2, final_epochs=1, eval_samples=60,
                    aa_samples=20, baselines=("uniform", "compound"), final_train_samples=300,
                    final_batch_size=32, final_bf16=True, device="cpu")
    summary = run_pipeline(cfg, out=out, progress=False)
    budget = summary["budget_macs"]
    assert summary["search"]["macs"] <= budget
    assert set(summary["models"]) == {"rcnas", "teacher-at", "uniform", "compound"}
    training = json.loads((out / "models" / "compound" / "model.json").read_text())["training"]
    assert (training["train_samples"], training["batch_size"], training["bf16"], training["channels_last"]) == (
        300, 32, True, True)  # the final-training settings of the RunConfig reach every network
    assert summary["machine"]["device"] == "cpu"
    assert json.loads((out / "teacher.json").read_text())["weights_sha256"] == summary["teacher_sha256"]
    for name, card in summary["models"].items():
        assert card["aa_acc"] <= card["pgd20_acc"] <= card["clean_acc"], name
        assert card["aa_n_eval"] == 20 and card["n_eval"] == 60
        if name != "teacher-at":
            assert card["macs"] <= budget
    for f in ["report.md", "summary.json", "search/arch.yaml", "search/trials.jsonl", "search/reward_curve.png",
              "models/rcnas/model.safetensors", "models/rcnas/card.json", "models/rcnas/card.md"]:
        assert (out / f).is_file(), f
    report = (out / "report.md").read_text()
    assert f"{summary['models']['rcnas']['clean_acc'] * 100:.2f}" in report
    # the found architecture loads back through the CLI, and `rcnas eval --json` speaks the contract
    assert main(["cost", "--arch", str(out / "search" / "arch.yaml"), "--input-size", "8", "--channels", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == summary["search"]["macs"]
    assert main(["eval", str(out / "models" / "uniform"), "--attacks", "clean,pgd20", "--samples", "40",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"clean", "pgd20", "cw40", "aa", "macs", "params"} <= set(got) and got["cw40"] is None
    # rerunning the same command repeats no evaluation
    for name in ("rcnas", "compound"):  # finished models need no weights to be skipped (bench/gpu.sh prunes them)
        (out / "models" / name / "model.safetensors").unlink()
    again = run_pipeline(cfg, out=out, progress=False)
    assert again["search"]["new_evaluations"] == 0
    assert again["search"]["evaluation_seconds"] == summary["search"]["evaluation_seconds"] > 0
    kept = json.loads(json.dumps(summary["models"]))
    for name in ("rcnas", "teacher-at", "compound"):  # finished: skipped, their cards kept as they were
        assert again["models"][name] == kept[name], name
        # the timings are the work's (epochs, attacks), not this call's near-zero wall time
        for stage in ("train", "eval"):
            assert again["timings_s"][f"{stage}/{name}"] == summary["timings_s"][f"{stage}/{name}"] > 0.05
    assert set(kept["rcnas"]["eval_seconds"]) == {"clean", "pgd20", "cw40", "aa"}
    assert summary["timings_s"]["eval/rcnas"] == pytest.approx(sum(kept["rcnas"]["eval_seconds"].values()))
    assert again["timings_s"]["search/rcnas"] == summary["timings_s"]["search/rcnas"] > 0
    assert not (out / "models" / "rcnas" / "model.safetensors").exists()
    # `rcnas eval --samples 40` above rewrote uniform's card: it is evaluated again with the run's settings
    assert again["models"]["uniform"]["n_eval"] == 60 and again["models"]["uniform"]["aa_n_eval"] == 20
    assert again["models"]["uniform"]["aa_acc"] == kept["uniform"]["aa_acc"]  # from the kept evaluation state
    # the same directory with other settings is refused before any work, naming what differs
    from dataclasses import replace

    from rcnas.errors import BadInput
    with pytest.raises(BadInput, match="final_epochs differ"):
        run_pipeline(replace(cfg, final_epochs=2), out=out, progress=False)
    # more baselines extend the run: the finished models are kept
    more = run_pipeline(replace(cfg, baselines=("uniform", "compound", "last-stage")), out=out, progress=False)
    assert more["models"]["rcnas"] == again["models"]["rcnas"] and "last-stage" in more["models"]
    # another evaluation (more test images, AutoAttack on more) evaluates the trained networks again and
    # trains none of them: only the two whose weights were deleted above go back to their training
    # (in this process, jobs=1, where the count sees it; the runs above trained in worker processes)
    import rcnas.api
    trained: list[str] = []
    real_train = rcnas.api.train

    def counting_train(arch, *args, out, **kwargs):
        trained.append(out.name)
        return real_train(arch, *args, out=out, **kwargs)
    monkeypatch.setattr(rcnas.api, "train", counting_train)
    wider = run_pipeline(replace(cfg, baselines=more["config"]["baselines"], eval_samples=90, aa_samples=30, jobs=1,
                                 teacher_at=False), out=out, progress=False)
    assert sorted(trained) == ["compound", "rcnas"]
    assert set(wider["models"]) == {"rcnas", "uniform", "compound", "last-stage"}  # no reference teacher asked for
    for name, card in wider["models"].items():
        assert (card["n_eval"], card["aa_n_eval"]) == (90, 30), name
        assert card["training"] == more["models"][name]["training"] or name in trained, name
        assert card["aa_acc"] <= card["pgd20_acc"] <= card["clean_acc"], name
    assert wider["search"]["new_evaluations"] == 0


def test_a_run_refuses_a_teacher_trained_again(tmp_path) -> None:
    """Searches and final trainings of one run start from one teacher: other weights under the same
    name (a lost cache, trained again) are refused, before any work, naming how to go on."""
    import torch

    from rcnas.errors import BadInput
    from rcnas.models import build_model
    from rcnas.pipeline import _check_teacher
    from rcnas.space.arch import Arch

    def teacher(seed: int):
        torch.manual_seed(seed)
        return build_model(Arch((1, 1, 1), (8, 16, 32)), 10, 1, (0.5,), (0.25,))
    first = _check_teacher(tmp_path, "wrn-16-1", teacher(0))
    assert json.loads((tmp_path / "teacher.json").read_text())["weights_sha256"] == first
    assert _check_teacher(tmp_path, "wrn-16-1", teacher(0)) == first  # the same weights: goes on
    with pytest.raises(BadInput, match=f"other wrn-16-1 teacher weights \\(sha256 {first[:12]}.*RCNAS_CACHE"):
        _check_teacher(tmp_path, "wrn-16-1", teacher(1))
    # and a run whose teacher left the cache is refused before a new one is trained
    from rcnas import api
    with pytest.raises(BadInput, match="wrn-10-2 teacher is not in the cache .*teachers.*restore it"):
        api.train_teacher("digits", "wrn-10-2", cache=tmp_path / "empty", cached_only="restore it")
    assert not (tmp_path / "empty").exists()


@pytest.mark.slow
def test_the_make_run_bench_times_a_fresh_run_beside_a_busy_neighbour(tmp_path, monkeypatch) -> None:
    """A tiny `rcnas run` (the Makefile's flags plus shrinking ones) in a new process with an empty cache:
    its row names the networks the demo trains (no reference teacher) and every stage's time, and the
    busy neighbour is gone afterwards."""
    import multiprocessing

    import rcnas.bench.make_run as mr
    tiny = tmp_path / "tiny.yaml"  # the flags cannot shrink the teacher or the proxy: a config can
    tiny.write_text("teacher: wrn-10-1\nteacher_epochs: 1\nproxy_epochs: 1\nfinal_train_samples: 200\n")
    monkeypatch.setattr(mr, "COMMAND", (*mr.COMMAND, "--config", str(tiny), "--agent", "scratch", "--evaluations",
                                        "2", "--epochs", "1", "--eval-samples", "40", "--aa-samples", "10"))
    row = mr.timed_run(neighbours=1)
    assert row["condition"] == "beside 1 busy process(es)" and row["networks"] == "rcnas, uniform"
    assert row["wall_minutes"] * 60 > row["teacher_s"] > 0 and row["search_s"] > 0
    assert row["train_s (sum)"] > 0 and row["eval_s (sum)"] > 0
    assert not multiprocessing.active_children()
