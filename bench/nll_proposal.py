"""How the importance-weighted NLL converges with its budget, on a trained run: plain importance
sampling from the fitted q0 at M samples, and AIS from q0 to each posterior at T temperatures.
One JSON line per setting: NLL (nats/sentence), the weights' effective sample size, floor
violations, seconds; log Z (AIS, computed once) is shared by every setting.

    python -m bench.nll_proposal runs/demo/s0 [--sentences 100] [--settings 0:100,0:1000,50:20,200:20]
    python -m bench.nll_proposal RUN --settings q:500,50:20   # an amortized run: its own q(z|x) against the fitted q0 + AIS

A setting `q:M` samples the run's amortized q(z|x) (M draws a sentence; runs with one only).
Every setting after the first also reports its paired difference from the first over the same
sentences, with its standard error (nll.paired_difference), so two estimators can be said to
agree within their errors or not.

An estimate that has converged stops moving as the budget grows: importance sampling
under-estimates log p(x) (Jensen) by about var(log w) / 2 when the weights are few and
uneven, so a falling NLL with growing M or T says the cheaper setting was biased high. The budget
of a setting T:M is M x (T + 1) decoder rows per sentence, plus the fit shared by all settings.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from corpora.registry import load_corpus
from textebm.api import load
from textebm.nll import (NLLConfig, paired_difference, partition, rows_per_sentence,
                         sentence_log_marginals)
from corpora.batching import by_length


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--settings", default="0:100,0:1000,50:20,200:20")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tm = load(a.run)
    corpus = load_corpus(tm.config.train.corpus, data_dir=a.data_dir)
    ids = tm.encode(corpus.split("test")[:a.sentences]).ids
    cfg0 = NLLConfig(seed=a.seed)
    z = partition(tm.model, cfg0.ais, cfg0.plain_mc_draws, a.seed)
    print(json.dumps({"run": a.run, "log_z": z["log_z"], "spread": z["spread"],
                      "plain_mc": z["plain_mc"]["log_z"], "seconds": z["seconds"]}), flush=True)
    first = None
    for item in a.settings.split(","):
        head, m = item.split(":")
        m = int(m)
        if head == "q":
            temps, cfg = 0, NLLConfig(q_samples=m, seed=a.seed, proposal="auto")
        else:
            temps = int(head)
            cfg = NLLConfig(temperatures=temps, samples=m, seed=a.seed, proposal="fitted")
        gen = torch.Generator().manual_seed(a.seed + 1)
        start, parts, order = time.time(), [], []
        rows = max(1, tm.model.decoder.token_cap(cfg.max_logits) // rows_per_sentence(cfg, head == "q"))
        for ix in by_length(ids, cfg.batch_size, rows):
            parts.append(sentence_log_marginals(tm.model, [ids[j] for j in ix], cfg, z["log_z"], gen))
            order += list(ix)
        log_p = torch.cat([p["log_p"] for p in parts])
        nll = torch.empty_like(log_p).index_copy_(0, torch.as_tensor(order), -log_p)  # input order
        pair = {}
        if first is None:
            first = nll
        else:
            d, se = paired_difference(nll.tolist(), first.tolist())
            pair = {"minus_first": d, "minus_first_se": se}
        ess = torch.cat([p["ess"] for p in parts])
        floor = torch.cat([p["floor"] for p in parts])
        print(json.dumps({"run": a.run, "setting": item, "temperatures": temps, "samples": m,
                          "sentences": len(ids), "nll": -log_p.mean().item(),
                          "ess_median": ess.median().item(), "ess_median_share": ess.median().item() / m,
                          "floor_violations": int((-log_p < floor).sum()),
                          "nll_se": (nll.std() / len(nll) ** 0.5).item(), **pair,
                          "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
