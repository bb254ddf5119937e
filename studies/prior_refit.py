"""Is the prior hole a moving-target effect? Refit a trained run's EBM to its final aggregate
posterior, decoder frozen, then measure the samples again. One JSON line per run x setting.

    python -m studies.prior_refit runs/study/demo/defaultps50pu2k150ema-s3-ebm [RUN ...]
        [--settings 0:0.001,1000:0.001,1000:0.0003] [--samples 2000]

During training the EBM chases the posterior of a decoder that is still changing. Here the
decoder and encoder are frozen at the run's weights (its average where it kept one), z+ is drawn
once for every training sentence by the run's own training posterior chain, and the EBM alone
takes UPDATES steps of Algorithm 1's prior step (same loss, energy_reg, clip, Adam betas, prior
chain) at learning rate LR, against batches of those z+. Setting `0:...` measures the run as it
is. If the hole came from the moving target, a refit EBM would close it at no cost in diversity.
Each setting's eval.json, eval.md and samples.txt go to RUN/prior_refit/UPDATES-LR/; the run's own
files are left alone. The budget: UPDATES prior steps of --batch chains, K0 steps each.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from studies.measured import add_measure_options, measure_afresh
from corpora.batching import frame
from corpora.registry import load_corpus
from textebm.api import load
from textebm.model import LatentEBM
from textebm.prior import contrastive_loss


def posterior_bank(model: LatentEBM, ids: list[list[int]], batch: int = 256) -> torch.Tensor:
    """z+ for every sentence from the run's training posterior chain: (N, D)."""
    return torch.cat([model.infer(frame(ids[i:i + batch]).to(model.device))[0].detach()
                      for i in range(0, len(ids), batch)])


def refit_prior(model: LatentEBM, bank: torch.Tensor, updates: int, lr: float, batch: int,
                train_cfg, seed: int = 0) -> list[dict]:
    """`updates` prior steps of Algorithm 1 against z+ drawn from `bank`; returns E+ - E- and the
    chains' mean norm every 100 updates."""
    gen = torch.Generator(device=bank.device).manual_seed(seed)
    opt = torch.optim.Adam(model.prior.parameters(), lr=lr, betas=(train_cfg.beta1, train_cfg.beta2))
    log = []
    for u in range(updates):
        z_pos = bank[torch.randint(len(bank), (batch,), generator=gen, device=bank.device)]
        z_neg = model.sample_prior(batch, generator=gen)[0].detach()
        loss, e_pos, e_neg = contrastive_loss(model.energy, z_pos, z_neg, train_cfg.energy_reg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.clip_prior:
            torch.nn.utils.clip_grad_norm_(model.prior.parameters(), train_cfg.clip_prior)
        opt.step()
        if u % 100 == 0 or u == updates - 1:
            log.append({"update": u + 1, "e_gap": float(e_pos - e_neg),
                        "z_neg_norm": float(z_neg.norm(dim=-1).mean())})
    return log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--settings", default="0:0.001,1000:0.001,1000:0.0003",
                    help="UPDATES:LR pairs, comma-separated")
    ap.add_argument("--batch", type=int, default=64, help="z+ and prior chains per update")
    add_measure_options(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        settings = [(int(u), float(lr)) for u, lr in (s.split(":") for s in a.settings.split(","))]
    except ValueError:
        raise SystemExit(f"--settings takes UPDATES:LR pairs, got {a.settings!r}") from None
    for run in map(Path, a.runs):
        probe = load(run)
        if not list(probe.model.prior.parameters()):
            raise SystemExit(f"{run}: its {probe.model.prior.kind} prior has no weights to refit")
        t = probe.config.train
        corpus = load_corpus(t.corpus, data_dir=a.data_dir, max_len=t.max_len, on_long=t.on_long,
                             train_split=t.train_split)
        torch.manual_seed(a.seed)
        t0 = time.time()
        bank = posterior_bank(probe.model, probe.encode(corpus.train).ids)
        bank_s = time.time() - t0
        for updates, lr in settings:
            tm = load(run)  # each setting refits the run's own EBM afresh
            t0 = time.time()
            log = refit_prior(tm.model, bank, updates, lr, a.batch, t, a.seed)
            fit_s = time.time() - t0
            out = run / "prior_refit" / f"{updates}-{lr:g}"
            res = measure_afresh(tm, corpus, out, a)
            print(json.dumps({"bench": "prior_refit", "run": str(run), "weights": tm.weights,
                              "updates": updates, "lr": lr, "batch": a.batch,
                              "k0": tm.config.langevin.k0, "bank_sentences": len(bank),
                              "bank_seconds": round(bank_s, 1), "fit_seconds": round(fit_s, 1),
                              "fppl5": res["fppl"], "rppl5": res["rppl"],
                              "sample_noise": res["sample_noise"], **res.get("latent", {}),
                              "fit_log": log}), flush=True)


if __name__ == "__main__":
    main()
