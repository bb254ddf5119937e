"""bench/table2_row.py --table: result folders -> rows in the layout of paper Table 2."""
import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "table2_row", Path(__file__).resolve().parents[1] / "bench" / "table2_row.py")
table2_row = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table2_row)


def result_folder(path: Path, kind: str, fppl: float, nll_of: str = "all", corpus: str = "ptb") -> Path:
    path.mkdir(parents=True)
    judge = lambda lm, f: {"lm": lm, "fppl": f, "rppl": 2 * f, "real_fppl": 99.5, "samples": 10000}
    ev = {**judge("ngram", fppl), "by_lm": {"ngram": judge("ngram", fppl), "lstm": judge("lstm", fppl + 1)},
          "nll": {"nll": 95.25, "nll_se": 0.75, "of_test": nll_of}, "latent": {"gap_nats_tok": 0.4567}}
    (path / "eval.json").write_text(json.dumps(ev))
    (path / "config.json").write_text(json.dumps({"train": {"corpus": corpus}, "prior": {"kind": kind}}))
    (path / "summary.json").write_text(json.dumps({"step": 1234, "sentences_seen": 78976,
                                                   "train_seconds": 7200.0}))
    return path


def test_table_has_real_data_and_paper_rows_then_one_row_per_run_and_judge(tmp_path):
    a = result_folder(tmp_path / "ebm-2h", "ebm", 300.0)
    b = result_folder(tmp_path / "gaussian-2h", "gaussian", 400.0, "random 500 of 3761 (seed 0)")
    lines = table2_row.table([a, b]).strip().splitlines()
    assert len(lines) == 2 + 1 + 2 + 1 + 4   # header, rule, real (paper), real x 2 judges, paper, runs
    assert lines[2].startswith("| real data, ptb (paper) | ? | 100.36 | – |")
    assert lines[3].startswith("| real data, ptb (ours) | ngram | 99.50 | – |")
    assert lines[5].startswith("| paper: latent EBM prior, ptb (Pang et al. 2020) | ? | 107.45 | 181.54 | 91.35 |")
    assert lines[6] == ("| ours, ebm prior (ebm-2h) | ngram | 300.00 | 600.00 | 95.25 ± 0.75 | 0.457 | "
                        "1,234 | 78,976 | 2.00 h |")
    assert lines[7].startswith("| ours, ebm prior (ebm-2h) | lstm | 301.00 | 602.00 |")
    assert "95.25 ± 0.75 (random 500 of 3761)" in lines[8] and "gaussian prior" in lines[8]


def test_table_has_one_block_per_corpus_and_files_a_text_file_run_under_its_folder(tmp_path):
    a = result_folder(tmp_path / "ptb" / "ebm-2h", "ebm", 300.0)
    # A run on a text file (SNLI's test file split 18/1/1) filed under results/snli/.
    b = result_folder(tmp_path / "snli" / "ebm-2h", "ebm", 50.0, corpus="../data/snli/test.txt")
    c = result_folder(tmp_path / "other" / "mine", "ebm", 70.0, corpus="mine.txt")
    lines = table2_row.table([a, b, c]).strip().splitlines()
    assert len(lines) == 2 + 3 * (1 + 2 + 1 + 2) - 2   # the text file outside results/snli: no paper rows
    assert lines[8] == "| real data, snli (paper) | ? | 23.53 | – | – | – | – | – | – |"
    assert lines[9].startswith("| real data, snli (ours) | ngram | 99.50 |")
    assert lines[11].startswith("| paper: latent EBM prior, snli (Pang et al. 2020) | ? | 27.81 | 31.96 | 28.9 |")
    assert lines[12].startswith("| ours, ebm prior (ebm-2h) | ngram | 50.00 | 100.00 |")
    assert lines[14].startswith("| real data, mine.txt (ours) | ngram |")
    assert lines[-1].startswith("| ours, ebm prior (mine) | lstm | 71.00 |")
