"""Posterior inference: how z is inferred for a sentence x, behind one interface.

`Posterior` (base.py) is what training, evaluation, `score` and the Python API call
(`LatentEBM.infer`, `chain_start`); `langevin.init1` names the implementation, one file each:

  - noise.py    `noise` (paper Algorithm 1: Langevin from N(0, I)) and `persistent` (the same
                chain, warm-started in training from the sentence's last z+);
  - encoder.py  `encoder`: Langevin from an amortized guess g(x), g regressed onto the chain's end;
  - amortized.py `amortized`: q(z|x) = N(mu(x), diag sigma^2(x)), reparameterized, learned with
                the decoder on the ELBO with the prior in it (no chain in training).

A new way to infer z is one new file with a subclass registered by `register_posterior`
(docs/architecture.md).
"""
from textebm.posterior.base import POSTERIORS, Posterior, build_posterior, register_posterior
from textebm.posterior import amortized, encoder, noise  # noqa: F401  (they register themselves)

__all__ = ["POSTERIORS", "Posterior", "build_posterior", "register_posterior"]
