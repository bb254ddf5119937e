"""The demo corpus's own checks (corpora/demo.py): what a trained model does, measured against
the grammar that made the data rather than against the model. Topic probes (does z carry the
sentence's topic?), the grammar's verdict on samples (the share it cannot emit, their exact
NLL/token beside the data's), and sentences decoded from posterior z.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from corpora import demo
from corpora.batching import frame
from textebm.diagnostics import posterior_chains
from textebm.model import LatentEBM
from textebm.nll import paired_difference


def _probe_accuracy(z_tr, y_tr, z_te, y_te, classes: int, steps: int = 300) -> float:
    """Multinomial logistic regression (L-BFGS, small L2), fitted on train, scored on test."""
    mu, sd = z_tr.mean(0), z_tr.std(0).clamp_min(1e-6)
    a, b = (z_tr - mu) / sd, (z_te - mu) / sd
    lin = torch.nn.Linear(a.size(1), classes).double()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    ya = torch.as_tensor(y_tr)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(a.double()), ya) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return float((lin(b.double()).argmax(1) == torch.as_tensor(y_te)).double().mean())


PROBE_CHAINS = 8  # chains per sentence behind the posterior-mean reading of the topic probe


def demo_report(model: LatentEBM, vocab, samples: list[list[str]], seed: int = 0,
                probe_sentences: tuple[int, int] = (1000, 500)) -> dict:
    """Diagnostics measured against the demo grammar itself (corpora/demo.py), not the model.

    samples: prior samples as token lists. The probe's sentences are fresh draws from the grammar
    (with their true topics), so it never sees the training data.
    """
    return {**topic_probes(model, vocab, seed, probe_sentences), **grammar_checks(samples),
            **posterior_decodes(model, vocab, seed)}


def posterior_decodes(model: LatentEBM, vocab, seed: int = 0, n: int = 1000,
                      max_len: int = 100) -> dict:
    """Sentences decoded from the aggregate posterior instead of the prior: z from one posterior
    chain (the training chain) for each of n fresh grammar sentences, then x ~ p(x|z) ancestrally,
    checked against the grammar (`posterior_impossible_share`, `posterior_samples_exact_nll_tok`).
    Beside the prior samples' checks it splits their error in two: what the decoder gets wrong
    from a z the posterior puts on data, and what the prior adds by drawing z elsewhere."""
    ids = [vocab.encode(t) for _, t in demo.generate(n, seed=20_000 + seed)]
    z = posterior_chains(model, ids, 1, seed + 2).squeeze(1)
    gen = torch.Generator(device=model.device).manual_seed(seed + 3)
    with torch.no_grad():
        out = [model.decoder.generate(z[i:i + 256], max_len=max_len, generator=gen)
               for i in range(0, n, 256)]
    sents = [vocab.decode(row) for part in out for row in part.tolist()]
    checks = grammar_checks(sents)
    return {"posterior_impossible_share": checks["impossible_share"],
            "posterior_samples_exact_nll_tok": checks["samples_exact_nll_tok"]}


def fano_information(accuracy: float, k: int) -> float:
    """A lower bound, in nats, on the information about a uniform k-way label that a classifier
    with this accuracy reads from its input (Fano): log k - h(1 - acc) - (1 - acc) log(k - 1).
    The topic is a function of the sentence, so I(x; z) is at least I(topic; z), which is at least
    this bound for the z the probe read (the reading chain's)."""
    e = min(max(1.0 - accuracy, 0.0), 1.0 - 1.0 / k)
    h = 0.0 if e in (0.0, 1.0) else -(e * math.log(e) + (1 - e) * math.log(1 - e))
    return max(0.0, math.log(k) - h - e * math.log(k - 1))


def topic_probes(model: LatentEBM, vocab, seed: int = 0,
                 probe_sentences: tuple[int, int] = (1000, 500), chains: int = PROBE_CHAINS) -> dict:
    """Topic probe accuracies on fresh demo sentences from z of one posterior chain (the run's
    reading chain, as `infer` runs it; `topic_probe_acc`), from the mean of `chains` such chains
    (`topic_probe_mean_acc`) and from the amortized start g(x) (`topic_probe_init_acc`, None
    without an encoder); the Bayes accuracy;
    and the chains' scatter against the spread of the posterior means (`z_within_var`,
    `z_between_var`: per-dimension variances averaged over dimensions)."""
    n_tr, n_te = probe_sentences
    labelled = demo.generate(n_tr + n_te, seed=10_000 + seed)
    topics = np.array([k for k, _ in labelled])
    ids = [vocab.encode(t) for _, t in labelled]

    def probe(z: torch.Tensor) -> float:
        z = z.cpu().double()
        return _probe_accuracy(z[:n_tr], topics[:n_tr], z[n_tr:], topics[n_tr:], len(demo.TOPICS))

    # The one-chain reading draws its own chains, as it did before the other two readings
    # existed, so that it stays comparable with earlier measurements.
    one = posterior_chains(model, ids, 1, seed, read=True).squeeze(1)
    many = posterior_chains(model, ids, chains, seed + 1, read=True)
    # The posterior's amortized code g(x) without the chain, where it has one.
    with torch.no_grad():
        codes = [model.posterior.code(frame(ids[i:i + 256]).to(model.device))
                 for i in range(0, len(ids), 256)]
    init = probe(torch.cat(codes)) if all(c is not None for c in codes) else None
    bayes = float(np.mean([demo.topic_posterior(t).argmax() == k for k, t in labelled[n_tr:]]))
    acc = probe(one)
    return {"topic_probe_acc": acc, "topic_info_fano": fano_information(acc, len(demo.TOPICS)),
            "topic_probe_mean_acc": probe(many.mean(1)),
            "topic_probe_init_acc": init, "topic_bayes_acc": bayes, "probe_chains": chains,
            "z_within_var": float(many.var(1).mean()), "z_between_var": float(many.mean(1).var(0).mean())}


def grammar_checks(samples: list[list[str]]) -> dict:
    """Samples (token lists) scored by the demo grammar's exact log p(x): the share it cannot
    emit, and the NLL/token of the rest next to the data's, each with its standard error.

    `data_exact_nll_tok` is the grammar's entropy rate on 50,000 fresh sentences
    (demo.entropy_rate, standard error 0.0014); `valid_exact_nll_tok` is the valid split's 1,000
    sentences, the reference of measurements made before (docs/latent-study.md)."""
    nll, se, impossible = demo.exact_nll_rate(samples)
    data_nll, data_se = demo.entropy_rate()
    valid_nll, valid_tokens = demo.true_nll(demo.splits()["valid"])
    return {"impossible_share": impossible,
            "samples_exact_nll_tok": nll, "samples_exact_nll_tok_se": se,
            "data_exact_nll_tok": data_nll, "data_exact_nll_tok_se": data_se,
            "samples_vs_data": nll / data_nll - 1,
            "valid_exact_nll_tok": valid_nll / valid_tokens, "samples_scored": int(len(samples))}


def exact_check(nll: list[float], sentences: list[list[str]]) -> dict:
    """The model's NLL of demo sentences against the grammar's exact -log p of the same ones:
    the mean difference and its standard error (paired over sentences). A model's cross-entropy
    is at least the data's entropy, so a difference below -2 standard errors is an estimator
    bug (or log Z too low)."""
    exact = -demo.log_probs(sentences)
    diff, se = paired_difference(nll, exact)
    return {"exact_nll": float(exact.mean()), "model_minus_exact": diff,
            "se": se, "below_by_se": -diff / se if se > 0 else math.inf,
            "passes": diff >= -2 * se}
