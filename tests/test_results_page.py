"""`rcnas bench results` (rcnas.bench.results_page): the results page and the README's headline table
come from the bench JSON files, deterministically, and only the marked README block is rewritten."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rcnas.bench.results_page import HEADLINE_END, HEADLINE_START, bench_results, write_results
from rcnas.bench.runner import BENCHES, run_bench

META = {"rcnas": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "numpy": "2.4.6",
        "platform": "Linux-x86_64", "processor": "x86_64", "cpus": 2, "torch_threads": 1, "cuda": None,
        "date": "2026-12-01 10:00:00 UTC"}


def _fake_results(root: Path) -> Path:
    """bench/results with a comparison (the headline), a throughput bench, and a runs folder to skip."""
    results = root / "bench" / "results"
    results.mkdir(parents=True)
    rows = [{"dataset": "fashion-mnist", "budget": b, "model": m, "seeds": 3, "clean": f"7{i}.00 ± 0.10",
             "pgd20": f"5{i}.25 ± 0.50", "cw40": f"5{i}.75 ± 0.25", "aa": f"4{i}.00 ± 1.00", "params": 100,
             "macs": macs, "n_test": 10000, "n_aa": 100}
            for b, scale in (("0.3x", 1), ("0.5x", 2))
            for i, (m, macs) in enumerate((("rcnas", 5_795_274 * scale), ("teacher-at", 20_284_352)))]
    comparison = {"meta": {**META, "seeds": [0, 1, 2], "settings": {"fashion-mnist": {"teacher": "wrn-16-1"}}},
                  "rows": rows,
                  "paired_rows": [{"dataset": "fashion-mnist", "budget": "0.3x", "vs": "teacher-at",
                                   "pgd20": "-1.23 ± 0.45", "pgd20_verdict": "behind"}],
                  "runs": [{"dataset": "fashion-mnist", "secret_run_setting": 1}]}
    (results / "comparison-fake.json").write_text(json.dumps(comparison))
    (results / "comparison-fake.md").write_text("# fake comparison\n")
    throughput = {"meta": {**META, "seeds": 3, "device": "cpu"},
                  "rows": [{"model": "tiny-net", "variant": "fp32", "rcnas_img_per_s": "474 ± 12", "ratio": 0.982}]}
    (results / "throughput.json").write_text(json.dumps(throughput))
    (results / "comparison-fake-runs").mkdir()
    (results / "comparison-fake-runs" / "ignored.json").write_text(json.dumps({"rows": [{"never": "shown"}]}))
    return results


README = f"""# project

Intro.

{HEADLINE_START}
old hand-typed table
{HEADLINE_END}

## More
"""


def test_page_has_every_json_and_rerunning_gives_the_same_bytes(tmp_path: Path) -> None:
    results = _fake_results(tmp_path)
    page = write_results(results, tmp_path / "docs" / "results.md", headline="comparison-fake")
    text = page.read_text()
    assert text.index("## comparison-fake") < text.index("## throughput")             # sorted by name
    assert "| fashion-mnist | 0.3x | rcnas | 3 | 70.00 ± 0.10 | 50.25 ± 0.50 |" in text  # rows, as in the JSON
    assert "| fashion-mnist | 0.3x | teacher-at |" in text and "-1.23 ± 0.45" in text    # paired rows too
    assert "| tiny-net | fp32 | 474 ± 12 | 0.982 |" in text
    assert "secret_run_setting" not in text and "never" not in text                     # runs, *-runs/ skipped
    assert "Reproduce: `rcnas bench comparison --config configs/comparison-fake.yaml`" in text
    assert "Reproduce: `rcnas bench throughput`" in text
    assert "[comparison-fake.md](../bench/results/comparison-fake.md)" in text          # the bench's own .md
    assert "- versions: rcnas 0.1.0, python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6" in text
    assert "- seeds: 0, 1, 2" in text and "- measured: 2026-12-01 10:00:00 UTC" in text
    write_results(results, page, headline="comparison-fake")
    assert page.read_text() == text
    assert sorted(p.name for p in page.parent.iterdir()) == ["results.md"]  # no temporary file left


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    results = _fake_results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    write_results(results, tmp_path / "docs" / "results.md", readme, headline="comparison-fake")
    text = readme.read_text()
    assert "old hand-typed table" not in text
    assert text.startswith("# project\n\nIntro.\n\n" + HEADLINE_START + "\n") and text.endswith(HEADLINE_END + "\n\n## More\n")
    assert "| model | MACs 0.3x | clean | PGD-20 | CW-40 | AA (100) | MACs 0.5x |" in text
    assert "| **rcnas** (found sub-network) | 5.80M | 70.00 ± 0.10 | 50.25 ± 0.50 | 50.75 ± 0.25 | 40.00 ± 1.00 | 11.6M |" in text
    assert "| teacher wrn-16-1, adversarially trained | 20.3M |" in text
    assert "(docs/results.md#comparison-fake)" in text
    write_results(results, tmp_path / "docs" / "results.md", readme, headline="comparison-fake")
    assert readme.read_text() == text


@pytest.mark.parametrize("body", ["# project\n\nno markers here\n",
                                  f"{HEADLINE_END}\n{HEADLINE_START}\n",                  # out of order
                                  f"{HEADLINE_START}\n{HEADLINE_END}\n{HEADLINE_START}\n"])  # twice
def test_readme_without_markers_is_left_alone_with_a_warning(tmp_path: Path, body: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    results = _fake_results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(body)
    with caplog.at_level(logging.WARNING):
        page = write_results(results, tmp_path / "docs" / "results.md", readme, headline="comparison-fake")
    assert readme.read_text() == body
    assert page.is_file()                                   # the page is written all the same
    assert HEADLINE_START in caplog.text and "left as it is" in caplog.text


def test_registered_bench_writes_docs_and_readme_of_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_results(tmp_path)
    (tmp_path / "README.md").write_text(README)
    monkeypatch.chdir(tmp_path)
    assert BENCHES.get("results") is bench_results
    page = run_bench("results", out="bench/results")  # as `rcnas bench results` calls it
    assert page == Path("docs/results.md") and page.is_file()
    # the default headline JSON is absent from this fake folder: the README is left as it is
    assert "old hand-typed table" in Path("README.md").read_text()
