"""Peak memory of the importance-weighted NLL on Yahoo-length sentences. One JSON line per setting.

    TEXTEBM_DATA=../shared/data python -m bench.nll_memory
    python -m bench.nll_memory --sentences 1000 --caps 40000,0

The estimator runs every posterior chain and importance sample of a batch through the decoder;
its memory is the logits, rows x positions x vocabulary floats per decoder call, so
`NLLConfig.max_logits` caps that product. Each setting runs in its own process (peak RSS is per
process) on the same sentences: the first `--sentences` of Yahoo's test split (the standard
version, about 80 tokens each), a model with the vocabulary of Yahoo's valid split (17,047 words)
and untrained weights (memory does not depend on them). A cap of 0 means one decoder call
per length bucket, as before the cap existed. The decoder is the demo size by default and the
chains short (K1 = 2, 2 chains, 4 importance samples): those change the time, not what the cap
bounds. Budget: one torch thread, a few minutes per setting.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time



def one(a) -> dict:
    import torch

    from corpora.registry import load_corpus
    from corpora.vocab import Vocab
    from textebm.config import DecoderConfig, LangevinConfig, PriorConfig
    from textebm.model import LatentEBM
    from textebm.ais import AISConfig
    from textebm.nll import NLLConfig, importance_nll

    torch.set_num_threads(1)
    torch.manual_seed(0)
    corpus = load_corpus("yahoo", data_dir=a.data_dir, train_split="valid")
    vocab = Vocab.build(corpus.train)
    test = corpus.split("test")[:a.sentences]
    ids = [vocab.encode(s) for s in test]
    model = LatentEBM(PriorConfig(), DecoderConfig(vocab_size=len(vocab), embed=a.embed,
                                                   hidden=a.hidden, dropout=0.0),
                      LangevinConfig(k1=2))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # What this measures is the decoder's memory, so log Z gets a token budget.
    cfg = NLLConfig(chains=2, samples=4, temperatures=2, batch_size=32, plain_mc_draws=10_000,
                    ais=AISConfig(temperatures=100, chains=50, runs=2, pilot_chains=20),
                    max_logits=a.cap if a.cap > 0 else 2**62)
    t0 = time.time()
    res = importance_nll(model, ids, cfg)
    return {"cap_logits": a.cap, "sentences": len(ids), "tokens": res["tokens"],
            "mean_len": res["tokens"] / len(ids) - 1, "vocab": len(vocab),
            "decoder": [a.embed, a.hidden], "nll": res["nll"], "seconds": round(time.time() - t0, 1),
            "rss_before_mb": round(base), "peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--caps", default="default,0", help="logits caps to compare (0: none)")
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cap", type=int, default=None, help=argparse.SUPPRESS)  # one child run
    a = ap.parse_args()
    if a.cap is not None:
        print(json.dumps(one(a)), flush=True)
        return
    from textebm.nll import NLLConfig
    for cap in a.caps.split(","):
        cap = NLLConfig().max_logits if cap == "default" else int(cap)
        cmd = [sys.executable, "-m", "bench.nll_memory", "--cap", str(cap), "--sentences", str(a.sentences),
               "--embed", str(a.embed), "--hidden", str(a.hidden)]
        if a.data_dir:
            cmd += ["--data-dir", a.data_dir]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
