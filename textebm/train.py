"""Algorithm 1 of the paper, top to bottom: learn the EBM prior and the decoder by short-run MCMC.

Per iteration, for a mini-batch x (PROTOCOL.md §3):
  1. z- ~ prior chain (K0 Langevin steps from N(0, I));
  2. z+ ~ posterior chain for x (K1 steps; from N(0, I) in the paper, or from the sentence's last
     z+ (init1 = persistent) or an amortized guess g(x) (init1 = encoder));
  3. decoder step: minimise -mean_i log p_beta(x_i | z+_i);
  4. prior step:   minimise mean_i E(z+_i) - mean_i E(z-_i) (the negative of eq. 10's update),
     which raises f_alpha where the posterior puts z and lowers it where the prior wanders
     (train.prior_updates > 1: repeated against fresh prior chains, with the same z+);
  5. (init1 = encoder) initializer step: minimise mean_i ||g(x_i) - z+_i||^2.
The first train.pretrain_steps iterations (0 by default) are a cheaper phase before the chains
start: `pretrain_step` trains decoder and encoder as an amortized MAP autoencoder.
"""
from __future__ import annotations

import json
import math
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from corpora.batching import Batches, frame, scored_tokens
from common.interrupt import DeferredStop
from common.progress import Bar
from common.tensorboard import open_writer, samples_text, scalars
from corpora.registry import Corpus
from common.storage import append_line, read_jsonl, trim_jsonl
from corpora.subword import SubwordTokenizer, run_tokenizer, to_units
from corpora.vocab import Vocab
from textebm.api import TextEBM
from textebm.checkpoint import (CONFIG, load_checkpoint, load_run_files, restore_rng,
                                save_checkpoint, save_run_files, write_json)
from textebm.config import RunConfig, resume_config
from textebm.diagnostics import LIGHT_COHERENCE, latent_use, prior_coherence
from textebm.ema import EMA_KEY, ema_init, ema_update
from textebm.distributed import Ranks, barrier, broadcast_object, broadcast_parameters, sum_gradients
from textebm.langevin import init_z
from textebm.model import LatentEBM, build_model, upgrade_state_dict
from common.precision import resolve


class DivergenceError(Exception):
    """A loss or energy became NaN/inf; the last good checkpoint is kept."""


def base_lrs(cfg: RunConfig) -> dict[str, float]:
    """Each optimizer's configured learning rate: what it starts at and `set_lrs` decays from."""
    return {"decoder": cfg.train.lr_decoder, "prior": cfg.train.lr_prior, "encoder": cfg.encoder.lr}


def make_optimizers(model: LatentEBM, cfg: RunConfig) -> dict[str, torch.optim.Optimizer]:
    t, lr = cfg.train, base_lrs(cfg)
    betas = (t.beta1, t.beta2)
    opts = {"decoder": torch.optim.Adam(model.decoder.parameters(), lr=lr["decoder"], betas=betas)}
    # A prior or posterior without parameters (the fixed N(0, I); Langevin from noise) has no
    # optimizer. The posterior's keeps its old name, "encoder", so old checkpoints resume.
    if list(model.prior.parameters()):
        opts["prior"] = torch.optim.Adam(model.prior.parameters(), lr=lr["prior"], betas=betas)
    if list(model.posterior.parameters()):
        opts["encoder"] = torch.optim.Adam(model.posterior.parameters(), lr=lr["encoder"])
    return opts


def set_lrs(opts: dict, step: int, cfg: RunConfig) -> None:
    """Linear decay from the base rates at step 0 to lr_final x them at max_steps: a function of
    the step alone, so a resume to the same max_steps continues the same schedule."""
    t, base = cfg.train, base_lrs(cfg)
    frac = 1.0 - (1.0 - t.lr_final) * min(step / max(t.max_steps, 1), 1.0)
    for k, o in opts.items():
        for g in o.param_groups:
            g["lr"] = base[k] * frac


def apply_gradients(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list,
                    clip: float | None, sync=None) -> None:
    """One optimizer step on `loss`; `sync(params)` combines gradients over ranks first."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync(params)
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def joint_step(model: LatentEBM, opts: dict, loss: torch.Tensor, clip: float | None,
               sync=None) -> None:
    """One step of decoder and posterior together on `loss` (the decoder's gradient clipped):
    the autoencoder pretraining and the amortized posterior's ELBO."""
    dec, enc = list(model.decoder.parameters()), list(model.posterior.parameters())
    for o in (opts["decoder"], opts["encoder"]):
        o.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync(dec + enc)
    if clip:
        torch.nn.utils.clip_grad_norm_(dec, clip)
    opts["decoder"].step()
    opts["encoder"].step()


class PersistentPrior:
    """Persistent prior chains (langevin.prior_buffer > 0): a bank of z- chains. Each EBM update
    draws n of them at random, restarts a `prior_reinit` share from N(0, I), runs the prior chain
    K0 steps on and puts them back, so over training each chain runs thousands of steps and finds
    the wells that a K0-step chain from N(0, I) never reaches; the contrastive update then lifts
    them (persistent contrastive divergence, Tieleman 2008). bank: (N, D)."""

    def __init__(self, bank: torch.Tensor, reinit: float):
        self.bank, self.reinit = bank, reinit

    def draw(self, model: LatentEBM, n: int) -> torch.Tensor:
        """n distinct chains (n <= the bank's size), advanced K0 steps and written back: distinct,
        so that no row is written twice (on CUDA the surviving write would be arbitrary).
        -> z-: (n, D)"""
        if n > self.bank.size(0):
            raise ValueError(f"{n} prior chains per update but a persistent bank of "
                             f"{self.bank.size(0)}: raise langevin.prior_buffer")
        rows = torch.randperm(self.bank.size(0), device=self.bank.device)[:n]
        z0 = self.bank[rows]
        fresh = torch.rand(n, device=z0.device) < self.reinit
        # A restart is a draw from the base the chain starts from (N(0, I) unless fitted).
        z0 = torch.where(fresh.unsqueeze(-1), model.to_z(torch.randn_like(z0)), z0)
        z = model.sample_prior(n, z0=z0)[0]
        self.bank[rows] = z.detach()
        return z


def smear(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """z + sigma * N(0, I), the code the decoder learns at (train.decoder_noise); z itself, with no
    draw from the random stream, at sigma = 0. z: (B, D)"""
    return z + sigma * torch.randn_like(z) if sigma else z


def train_step(model: LatentEBM, x: torch.Tensor, opts: dict, cfg: RunConfig,
               z0: torch.Tensor | None = None, sync=None, learn_prior: bool = True,
               prior_bank: PersistentPrior | None = None) -> tuple[dict, torch.Tensor]:
    """One iteration of Algorithm 1 on x: (B, T), the posterior chain started at z0: (B, D) if
    given (persistent chains). `sync(params)`: sums gradients over data-parallel ranks
    (textebm.distributed). `learn_prior=False` skips steps 1 and 4 (train.prior_start).
    `prior_bank`: the prior chains continue persistent ones instead of starting from N(0, I).
    Returns floats for logging and z+: (B, D)."""
    tc = cfg.train
    # Every prior's z- are drawn (and logged), also where it learns nothing from them (the fixed
    # N(0, I), drawn exactly): the random stream, and so a run, is the same for every prior.
    n_neg = tc.prior_chains or x.size(0)

    def negatives() -> torch.Tensor:
        return model.sample_prior(n_neg)[0] if prior_bank is None else prior_bank.draw(model, n_neg)

    z_neg = negatives() if learn_prior else None
    z_pos, post_loss, post_logs = model.posterior.train_codes(model, x, z0)

    model.train()
    log_px = model.decoder.log_prob(x, smear(z_pos, tc.decoder_noise))
    loss_dec = -log_px.mean()
    if post_loss is None:   # z+ from a chain: the decoder learns alone
        apply_gradients(opts["decoder"], loss_dec, list(model.decoder.parameters()),
                        tc.clip_decoder, sync)
    else:                   # reparameterized codes: decoder and posterior learn in one step
        joint_step(model, opts, loss_dec + post_loss, tc.clip_decoder, sync)
        z_pos = z_pos.detach()
    # Logged values stay on the device until one transfer at the end (one host sync per step).
    logs = {"loss_dec": loss_dec.detach(), "nll_tok": -log_px.detach().sum() / scored_tokens(x).sum(),
            **post_logs}
    for i in range(tc.prior_updates if learn_prior and "prior" in opts else 0):
        if i:  # each further update of the same z+ against a fresh prior chain
            z_neg = negatives()
        loss_prior, prior_logs = model.prior.loss(z_pos, z_neg, tc)
        apply_gradients(opts["prior"], loss_prior, list(model.prior.parameters()), tc.clip_prior,
                        sync)
        if not i:  # what is logged is the iteration's first prior update
            logs.update({k: v.detach() for k, v in prior_logs.items()})
    if learn_prior:
        model.prior.observe(z_pos)
    loss_post = model.posterior.loss(x, z_pos)
    if loss_post is not None:
        apply_gradients(opts["encoder"], loss_post, list(model.posterior.parameters()), None, sync)
        logs["init_err"] = loss_post.detach()
    logs["z_pos_norm"] = z_pos.norm(dim=-1).mean()
    if z_neg is not None:
        logs["z_neg_norm"] = z_neg.norm(dim=-1).mean()
    out = dict(zip(logs, torch.stack([v.float() for v in logs.values()]).tolist()))
    return out, z_pos


def pretrain_step(model: LatentEBM, x: torch.Tensor, opts: dict, cfg: RunConfig,
                  sync=None) -> tuple[dict, torch.Tensor]:
    """One pretraining iteration (train.pretrain_steps) on x: (B, T): z = g(x) and one step on
    -log p(x|z) + ||z||^2/2, the negative joint log-density log p(x, z) under the N(0, I) base at
    the encoder's code, through decoder and encoder together. That is what the default cold
    posterior chain (noise 0.2) climbs, amortized: one decoder pass where an iteration of
    Algorithm 1 costs K1 + 1 of them, so the decoder learns the language and to read z several
    times faster, and the chains later start from an encoder that already points at the codes.
    The EBM is not trained and no prior chain runs. Returns floats for logging and z: (B, D)."""
    tc = cfg.train
    model.train()
    z = model.posterior.code(x)
    if z is None:
        raise ValueError(f"pretraining needs an amortized code; posterior {cfg.langevin.init1!r} "
                         f"has none")
    log_px = model.decoder.log_prob(x, smear(z, tc.decoder_noise))
    loss = (-log_px + 0.5 * z.pow(2).sum(-1)).mean()
    joint_step(model, opts, loss, tc.clip_decoder, sync)
    z = z.detach()
    model.prior.observe(z)
    logs = {"loss_dec": -log_px.detach().mean(), "nll_tok": -log_px.detach().sum() / scored_tokens(x).sum(),
            "z_pos_norm": z.norm(dim=-1).mean(), "pretrain": torch.ones(())}
    return dict(zip(logs, torch.stack([v.float() for v in logs.values()]).tolist())), z


def validation_metrics(model: LatentEBM, valid_ids: list[list[int]], seed: int) -> dict:
    """Validation NLL/token at the posterior z (the run's own chain) and at random z, whose
    difference is the latent gap, plus active units and I(x; z) on up to 100 sentences, and the
    prior's coherence with the codes on up to 200 (diagnostics.prior_coherence, light budget)."""
    d = latent_use(model, valid_ids, seed, chains=4, gap_steps=None, chain_sentences=100)
    c = prior_coherence(model, valid_ids[:200], seed, LIGHT_COHERENCE)
    keep = ("energy_codes_mean", "energy_samples_mean", "energy_samples_minus_codes",
            "descent_energy_min", "descent_below_codes_p01", "log_z_ais", "log_z_plain_mc")
    return {"val_recon_nll_tok": d["nll_tok_posterior_z"], "val_random_z_nll_tok": d["nll_tok_random_z"],
            "val_gap": d["gap_nats_tok"], "active_units": d["active_units"],
            "mutual_info": d["mutual_info"], "mutual_info_max": d["mutual_info_max"],
            **{k: c[k] for k in keep if k in c}}


@dataclass
class TrainSetup:
    """What `train` needs besides the config: the run folder to write, the device, whether to
    show a progress bar, and whether to continue the run already in that folder."""
    out_dir: Path
    device: torch.device
    progress: bool = True
    resume: bool = False
    ranks: Ranks = Ranks()  # data-parallel position (textebm.distributed); one process by default
    tensorboard: Path | None = None  # also write TensorBoard event files here (common.tensorboard)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """A run ready for its loop: the settings it runs (a resume's are the recorded ones), its
    vocabulary and units, the data as ids, the model and optimisers at `step`, and the training
    state saved beside the weights (`extra`: the persistent chains, the weight average)."""
    cfg: RunConfig
    vocab: Vocab
    tokenizer: SubwordTokenizer | None
    train_ids: list
    valid_ids: list
    model: LatentEBM
    opts: dict
    step: int
    seconds_before: float
    extra: dict
    bank: torch.Tensor | None            # persistent posterior chains, one per training sentence
    prior_bank: PersistentPrior | None   # persistent prior chains


def start_run(cfg: RunConfig, corpus: Corpus, setup: TrainSetup) -> Run:
    """Run setup: the settings (a resume's recorded ones, extended to the new length), subword
    units and vocabulary learned on the training split (rank 0 writes them, the others read),
    precision decided once, the model and optimisers, and on resume their saved state."""
    out, t, ranks = setup.out_dir, cfg.train, setup.ranks
    if ranks.world > 1 and cfg.prior.base == "fitted":
        raise ValueError("a fitted prior base (moving moments of each rank's codes) is "
                         "single-process only")
    if ranks.world > 1 and cfg.langevin.init1 == "persistent":
        raise ValueError("persistent posterior chains (a per-sentence bank) are single-process "
                         "only; use --set langevin.init1=encoder (or noise) with torchrun")
    if t.batch_size < ranks.world:
        raise ValueError(f"batch size {t.batch_size} is smaller than the {ranks.world} processes")
    if setup.resume:
        saved_cfg, vocab = load_run_files(out)
        # What a resume may change is config.resume_config's to say (how long to train).
        cfg = resume_config(saved_cfg, t.max_steps, t.time_budget)
        t = cfg.train
        if ranks.main:
            write_json(out / CONFIG, cfg.to_dict())  # the run's record says how long it trains
        tokenizer = run_tokenizer(out)
    elif not ranks.main:
        # Rank 0 learns the units and writes the run files; the other ranks read them.
        barrier(ranks)
        seed_everything(t.seed)
        cfg, vocab = load_run_files(out)
        tokenizer = run_tokenizer(out)
    else:
        seed_everything(t.seed)
        # Subword units (--tokenizer spm) are learned on the training split, like the vocabulary.
        tokenizer = SubwordTokenizer.train(corpus.train, t.vocab_size or 8000, out / "spm") \
            if t.tokenizer == "spm" else None
        vocab = Vocab.build(to_units(corpus.train, tokenizer),
                            max_size=None if tokenizer else t.vocab_size, min_count=t.min_count)
        cfg.decoder.vocab_size = len(vocab)
        # `auto` is decided once, when the run starts; a resume computes as the run began.
        t.precision_used, why = resolve(t.precision, setup.device)
        if setup.progress:
            print(f"precision: {t.precision_used} ({why})")
        save_run_files(out, cfg, vocab)
        barrier(ranks)

    train_ids = [vocab.encode(s) for s in to_units(corpus.train, tokenizer)]
    valid = corpus.split("valid")[: t.eval_sentences] if corpus.has("valid") else []
    valid_ids = [vocab.encode(s) for s in to_units(valid, tokenizer)]
    model = build_model(cfg, setup.device, t.precision_used or "fp32", t.compile)
    opts = make_optimizers(model, cfg)
    step, seconds_before = 0, 0.0
    if setup.resume:
        payload = load_checkpoint(out, map_location=setup.device)
        model.load_state_dict(payload["model"])
        for k, o in opts.items():
            o.load_state_dict(payload["optimizers"][k])
        step = int(payload["step"])
        seconds_before = float(payload.get("train_seconds", 0.0))
        restore_rng(out, payload)
    broadcast_parameters(model, ranks)
    if not ranks.main:
        # Each rank's chains draw their own noise (rank 0's stream is the single-process one).
        torch.manual_seed(t.seed + 7919 * ranks.rank + step)
    # Persistent posterior chains: one z per training sentence, each chain resuming where that
    # sentence's last one stopped. The bank is saved with the checkpoint, so resume is exact.
    bank = None
    if cfg.langevin.init1 == "persistent":
        if setup.resume and "bank" in payload:
            bank = payload["bank"].to(setup.device)
        else:
            gen = torch.Generator(device=setup.device).manual_seed(t.seed + 3)
            bank = init_z(len(train_ids), model.latent_dim, setup.device, gen, model.dtype)
    extra = {"bank": bank} if bank is not None else {}
    prior_bank = None
    if cfg.langevin.prior_buffer and not model.prior.exact:
        if setup.resume and "prior_bank" in payload:
            z = payload["prior_bank"].to(setup.device)
        else:
            gen = torch.Generator(device=setup.device).manual_seed(t.seed + 5)
            z = init_z(cfg.langevin.prior_buffer, model.latent_dim, setup.device, gen, model.dtype)
        prior_bank = PersistentPrior(z, cfg.langevin.prior_reinit)
        extra["prior_bank"] = z
    # The weight average (train.ema) is saved beside the weights; a resume continues it.
    if t.ema:
        extra[EMA_KEY] = (upgrade_state_dict(payload[EMA_KEY]) if setup.resume and EMA_KEY in payload
                          else ema_init(model))
    return Run(cfg, vocab, tokenizer, train_ids, valid_ids, model, opts, step, seconds_before,
               extra, bank, prior_bank)


def train(cfg: RunConfig, corpus: Corpus, setup: TrainSetup, on_eval=None) -> dict:
    """Train to cfg.train.max_steps in setup.out_dir (resuming there if setup.resume): Algorithm 1
    top to bottom, with validation, checkpoints and metrics.jsonl.

    Returns a summary dict (also written as `summary.json`). Raises DivergenceError on NaN/inf.
    """
    run = start_run(cfg, corpus, setup)
    out, ranks, cfg, model, opts = setup.out_dir, setup.ranks, run.cfg, run.model, run.opts
    t, step, extra, bank, prior_bank = cfg.train, run.step, run.extra, run.bank, run.prior_bank
    train_ids, valid_ids = run.train_ids, run.valid_ids
    budget_s = math.inf if t.time_budget is None else 60 * t.time_budget

    batches = Batches(train_ids, t.batch_size, seed=t.seed)
    scored_lengths = np.array([len(s) + 1 for s in train_ids])  # words and </s>, per sentence
    # The model as `textebm sample` sees it: validation samples are drawn the same way.
    view = TextEBM(model, run.vocab, cfg, out)
    # Rank 0 alone writes; metrics.jsonl is line-buffered, so it is readable live. A resume first
    # drops the lines past the checkpoint's step (written after the last save, written again
    # now) and a last line cut short by kill -9 or a full disk.
    metrics_path = out / "metrics.jsonl"
    if setup.resume and ranks.main:
        dropped = trim_jsonl(metrics_path, lambda m: m.get("step", 0) <= step)
        if dropped:
            warnings.warn(f"{metrics_path}: dropped {dropped} line(s) past step {step} or cut short",
                          RuntimeWarning)
    metrics_f = open(metrics_path, "a", buffering=1) if ranks.main else None
    tb = open_writer(setup.tensorboard) if setup.tensorboard and ranks.main else None
    bar = Bar("train", t.max_steps, step) if setup.progress and ranks.main else None
    epoch_cache: dict[int, list] = {}
    last_eval: dict = {}
    metrics: dict = {}
    # The run's clock (`seconds`, train_seconds, the time budget) is training time: iterations,
    # their logging and checkpoint saves, over all resumes; validation and the samples shown
    # beside it stop it, and each eval line records its own `valid_seconds`.
    t0, tokens_seen, valid_s = time.time(), 0, 0.0

    def seconds() -> float:  # training time of the run so far, over all its resumes
        return run.seconds_before + time.time() - t0 - valid_s

    def out_of_time() -> bool:  # rank 0's clock decides, so all ranks stop at the same step
        return budget_s < math.inf and broadcast_object(seconds() >= budget_s, ranks)

    # Ctrl-C, SIGTERM, SIGHUP: the iteration in progress finishes, then the state is saved.
    stop = DeferredStop()
    try:
        while step < t.max_steps and not out_of_time():
            stop.check()
            epoch, pos = divmod(step, len(batches))
            if epoch not in epoch_cache:
                epoch_cache = {epoch: batches.indices(epoch)}
            ix = epoch_cache[epoch][pos]
            mine = ranks.share(ix)
            sync = (None if ranks.world == 1 else
                    partial(sum_gradients, weight=len(mine) / len(ix), ranks=ranks))
            x = frame([train_ids[i] for i in mine]).to(setup.device)
            rows = torch.as_tensor(mine, device=setup.device)
            if t.lr_final != 1.0:
                set_lrs(opts, step, cfg)
            if step < t.pretrain_steps:
                metrics, z_pos = pretrain_step(model, x, opts, cfg, sync)
            else:
                metrics, z_pos = train_step(model, x, opts, cfg, None if bank is None else bank[rows],
                                            sync, learn_prior=step >= t.prior_start,
                                            prior_bank=prior_bank)
            if bank is not None:
                bank[rows] = z_pos
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise DivergenceError(
                    f"step {step + 1}: {', '.join(bad)} became NaN/inf. The last good checkpoint "
                    f"is in {out}. Lower the prior step size (--set langevin.s0=...), the "
                    f"posterior step size (langevin.s1) or the learning rates (train.lr_prior, "
                    f"train.lr_decoder), then --resume.")
            step += 1
            if t.ema:
                ema_update(extra[EMA_KEY], model, t.ema, step)
            ntok = int(scored_lengths[mine].sum())  # from the host: no device sync
            tokens_seen += ntok
            metrics.update(step=step, epoch=epoch, tokens=ntok,
                           tok_s=tokens_seen / max(time.time() - t0 - valid_s, 1e-9),
                           seconds=seconds())
            if not ranks.main:
                continue
            append_line(metrics_path, json.dumps(metrics), metrics_f)
            if tb:
                scalars(tb, "train", metrics, step, TB_TRAIN)
            if bar:
                bar.update(step, _bar_info(metrics, last_eval))
            last = step == t.max_steps or seconds() >= budget_s
            if t.eval_every and (step % t.eval_every == 0 or last) and valid_ids:
                v0 = time.time()
                shown = view.sample_chains(t.samples_shown, seed=t.seed + 2).sentences
                last_eval = {"step": step, "kind": "eval", **validation_metrics(model, valid_ids, t.seed + 1),
                             "samples": shown, "valid_seconds": round(time.time() - v0, 3)}
                append_line(metrics_path, json.dumps(last_eval), metrics_f)
                metrics_f.flush()
                if tb:
                    _tensorboard_eval(tb, view, last_eval, t.seed + 2)
                if on_eval:
                    on_eval(last_eval)
                valid_s += time.time() - v0   # validation, TensorBoard and printing: off the clock
            if t.save_every and step % t.save_every == 0:
                save_checkpoint(out, model, opts, step, extra | {"train_seconds": seconds()})
    except KeyboardInterrupt:
        if ranks.main:
            # Nothing lost: a resume continues at this step, with the time spent so far.
            save_checkpoint(out, model, opts, step, extra | {"train_seconds": seconds()})
        raise
    finally:
        stop.restore()
        if metrics_f:
            metrics_f.close()
        if tb:
            tb.close()
        if bar:
            bar.close()
    if not ranks.main:
        return {"step": step, "run_dir": str(out), "rank": ranks.rank}
    total = seconds()
    save_checkpoint(out, model, opts, step, extra | {"train_seconds": total})
    # Validation over all of the run's sessions: the eval lines that metrics.jsonl kept.
    valid_total = sum(m.get("valid_seconds") or 0.0 for m in read_jsonl(metrics_path)
                      if m.get("kind") == "eval")
    summary = {"step": step, "run_dir": str(out), "corpus": corpus.describe(),
               "final_train_nll_tok": metrics.get("nll_tok"),
               "last_eval": last_eval, "seconds": time.time() - t0, "train_seconds": total,
               "valid_seconds": valid_total,
               "sentences_seen": step * t.batch_size, "time_budget_min": t.time_budget,
               "precision": t.precision_used, "threads": torch.get_num_threads()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


TB_TRAIN = ("loss_dec", "nll_tok", "e_pos", "e_neg", "e_pos_minus_neg", "init_err", "z_pos_norm",
            "z_neg_norm", "tok_s")


def _tensorboard_eval(tb, view: TextEBM, ev: dict, seed: int) -> None:
    """A validation in TensorBoard: its numbers under valid/, its samples as text, and the energy
    profile of 16 prior chains (their own seeded generator: the training stream is untouched)."""
    import matplotlib.image
    from textebm.api import plot_energy_profile
    step = ev["step"]
    scalars(tb, "valid", ev, step, [k for k in ev if k not in ("step", "kind", "samples")])
    samples_text(tb, "samples", ev["samples"], step)
    if not view.model.prior.exact:
        s = view.sample_chains(16, profile=True, seed=seed, sampler="chain")
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_energy_profile(s.profile, Path(tmp) / "profile.png")
            tb.add_image("prior/energy_profile", matplotlib.image.imread(png)[..., :3], step,
                         dataformats="HWC")


def _bar_info(metrics: dict, ev: dict) -> str:
    info = f"{metrics['tok_s']:.0f} tok/s  nll/tok {metrics['nll_tok']:.3f}"
    if "e_pos_minus_neg" in metrics:
        info += f"  E+ - E- {metrics['e_pos_minus_neg']:+.3f}"
    if ev:
        info += f"  val {ev['val_recon_nll_tok']:.3f}"
    return info
