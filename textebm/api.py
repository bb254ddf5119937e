"""The Python API for a trained run: sample, infer z, score, reconstruct, interpolate.

    >>> import textebm
    >>> m = textebm.load("runs/demo/20250101-120000")
    >>> m.sample(5, steps=100, seed=0)                   # list of 5 sentences
    >>> z = m.infer(["the chef stirred the soup ."])    # (1, 32), posterior chain
    >>> m.interpolate("the wind froze .", "the band played a song .", points=8).sentences

Sign convention: E(z) = -f_alpha(z) (lower = more probable); the prior chain targets
U0(z) = E(z) + ||z||^2/2. Sentences are whitespace-tokenised and normalised as the run's corpus
was (corpora.preprocess.normalise); words outside the vocabulary become `<unk>` and are counted.
Work over many sentences is vectorised: sorted by length, framed and run `batch_size` at a time.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from corpora.batching import by_length, frame, scored_tokens
from corpora.preprocess import normalise
from corpora.subword import run_tokenizer
from corpora.vocab import EOS_ID, PAD_ID, UNK, Vocab
from textebm.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint, load_run_files
from textebm.ema import EMA_KEY
from textebm.config import RunConfig
from textebm.model import LatentEBM, build_model

DECODE_MODES = ("sample", "greedy")
# Longest decoded sentence when the caller does not say (tokens, `</s>` included). Yahoo
# documents average ~79 tokens, the other corpora stay far below 100.
DECODE_MAX_LEN = {"yahoo": 300}  # longest decoded sentence, in tokens, per corpus
DECODE_MAX_LEN_OTHER = 100
# Offset between the chain's seed and the decoder's seed: decoding draws from its own stream,
# so the sentence decoded at a trace step K equals the final sample of a K-step chain.
_DECODE_SEED_OFFSET = 7919
# Where sampled z come from: the run's short-run prior chain, Metropolis-adjusted Langevin on the
# prior (p_alpha itself), or a Gaussian fitted to the aggregate posterior (`fit_aggregate`).
SAMPLERS = ("chain", "mala", "aggregate")


@dataclass
class Encoded:
    """Sentences as word ids (no framing) and what the vocabulary did not know."""
    ids: list[list[int]]
    unknown: Counter  # word -> occurrences mapped to `<unk>`

    @property
    def n_unk(self) -> int:
        return sum(self.unknown.values())


@dataclass
class TracePoint:
    """The chains after `step` Langevin steps: z (n, D), E(z) (n,), decoded sentences."""
    step: int
    z: torch.Tensor
    energy: torch.Tensor
    sentences: list[str]


@dataclass
class Samples:
    """Prior-chain samples. z: (n, D); energy: E(z) = -f(z), (n,); ids: (n, L) long, `</s>`
    then `<pad>`. `profile`: (steps+1, n) E(z_k) along every chain (when asked for)."""
    z: torch.Tensor
    energy: torch.Tensor
    ids: torch.Tensor
    sentences: list[str]
    steps: int
    step_size: float
    noise: float
    decode: str
    seed: int
    trace: list[TracePoint] = field(default_factory=list)
    profile: torch.Tensor | None = None
    sampler: str = "chain"
    accept: float | None = None  # the MALA sampler's acceptance rate (frozen half)


@dataclass
class Reconstruction:
    """Posterior z (B, D), greedy decodes, token accuracy (position-wise over the reference,
    `</s>` included), NLL per scored token -log p(x|z) at the inferred z, and the `<unk>` count."""
    z: torch.Tensor
    sentences: list[str]
    references: list[str]
    token_accuracy: float
    nll_per_token: float
    tokens: int
    n_unk: int
    per_sentence_accuracy: list[float]


@dataclass
class Interpolation:
    """Greedy decodes along z(t) = (1 - t) z_a + t z_b. t: (P,), z: (P, D)."""
    t: torch.Tensor
    z: torch.Tensor
    sentences: list[str]
    n_unk: int


def token_accuracy(references: Sequence[Sequence[int]], hyp: torch.Tensor) -> tuple[float, list[float]]:
    """Position-wise accuracy of decoded ids against the references, over each reference's words
    and its `</s>` (a decode that stops early or runs long misses the rest).
    references: B id lists (no framing); hyp: (B, L) ids as `generate` returns them.
    -> (accuracy over all reference tokens, per-sentence accuracies)."""
    correct = total = 0
    per_sentence = []
    for ref, row in zip(references, hyp.tolist()):
        ref = list(ref) + [EOS_ID]
        hits = sum(1 for r, h in zip(ref, row) if r == h)
        correct, total = correct + hits, total + len(ref)
        per_sentence.append(hits / len(ref))
    return correct / max(total, 1), per_sentence


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


class TextEBM:
    """A trained LatentEBM with its vocabulary and config, in eval mode."""

    def __init__(self, model: LatentEBM, vocab: Vocab, config: RunConfig,
                 run_dir: Path | None = None, step: int | None = None, batch_size: int = 256,
                 weights: str = "last"):
        self.model, self.vocab, self.config = model.eval(), vocab, config
        self.run_dir, self.step, self.batch_size = run_dir, step, batch_size
        self.weights = weights  # "last", or "average": the run's weight average (train.ema)
        # Runs trained on subword pieces keep their sentencepiece model beside the vocabulary.
        self.tokenizer = run_tokenizer(run_dir) if run_dir is not None else None
        self.aggregate: tuple[torch.Tensor, torch.Tensor] | None = None  # (mu, chol): fit_aggregate

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def precision(self) -> str:
        """The decoder's compute precision, fp32 or bf16 (common.precision)."""
        return "bf16" if self.model.decoder.compute_dtype == torch.bfloat16 else "fp32"

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def default_max_len(self) -> int:
        return DECODE_MAX_LEN.get(Path(self.config.train.corpus).name, DECODE_MAX_LEN_OTHER)

    # ---- text <-> ids -------------------------------------------------------------------
    def encode(self, sentences: Sequence[str | Sequence[str]]) -> Encoded:
        """Whitespace-split strings (token lists are taken as they are), normalise as the run's
        corpus, map to ids; unknown words -> `<unk>`, counted. Empty sentences are an error."""
        corpus = Path(self.config.train.corpus).name
        ids, unknown = [], Counter()
        for i, s in enumerate(sentences):
            toks = normalise(s.split(), corpus) if isinstance(s, str) else list(s)
            if not toks:
                raise ValueError(f"sentence {i + 1} is empty")
            if self.tokenizer is not None:
                toks = self.tokenizer.encode(toks)
            unknown.update(w for w in toks if w not in self.vocab and w != UNK)
            ids.append(self.vocab.encode(toks))
        if not ids:
            raise ValueError("no sentences given")
        return Encoded(ids, unknown)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """ids: (n, L) -> strings, cut at `</s>`."""
        units = [self.vocab.decode(row) for row in ids.tolist()]
        return [" ".join(self.tokenizer.decode(u) if self.tokenizer else u) for u in units]

    def _chunks(self, ids: list[list[int]]):
        """Yield (positions, x) with x: (b, T) framed, sorted by length to keep padding small."""
        for pos in by_length(ids, self.batch_size):
            yield torch.from_numpy(pos), frame([ids[j] for j in pos]).to(self.device)

    # ---- prior samples ------------------------------------------------------------------
    def sample_chains(self, n: int, steps: int | None = None, step_size: float | None = None,
                      decode: str = "sample", temperature: float = 1.0, seed: int | None = None,
                      max_len: int | None = None, trace_at: Sequence[int] = (),
                      profile: bool = False, noise: float | None = None,
                      sampler: str | None = None) -> Samples:
        """n prior chains: z_0 ~ N(0, I), `steps` Langevin steps on U0(z) = E(z) + ||z||^2/2
        (default the run's sampling steps, K0 unless sample_k0 is set, and s0), then one sentence per z (ancestral or greedy). `noise`: the
        chain's noise scale (default the run's `sampling_noise()`; 1 = Langevin on U0).

        `trace_at`: also decode the same chains after those steps (paper Table 3); `profile`:
        record E(z_k) at every step k. Only the current z is kept, so `steps=2500` costs no
        more memory than `steps=60` (plus (steps+1, n) floats for the profile).
        `sampler`: "chain" or "mala" (default: the run's prior_sampler), Metropolis-adjusted
        chains that sample p_alpha itself (no noise scale, no profile; LatentEBM.sample_prior).
        """
        lc = self.config.langevin
        steps = lc.sampling_steps() if steps is None else int(steps)
        step_size = lc.s0 if step_size is None else float(step_size)
        noise = lc.sampling_noise() if noise is None else float(noise)
        max_len = self.default_max_len() if max_len is None else int(max_len)
        if n < 1:
            raise ValueError(f"the number of samples must be >= 1, got {n}")
        if steps < 0 or step_size <= 0:
            raise ValueError(f"need steps >= 0 and step size > 0, got {steps} and {step_size}")
        if noise < 0:
            raise ValueError(f"the chain's noise scale must be >= 0, got {noise}")
        sampler = lc.prior_sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if sampler != "chain" and (profile or trace_at):
            raise ValueError(f"the {sampler} sampler records no trace or energy profile; use the chain")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        trace_at = sorted(set(int(k) for k in trace_at))
        if trace_at and (trace_at[0] < 0 or trace_at[-1] > steps):
            raise ValueError(f"trace steps must lie in 0..{steps} (the chain length), got {trace_at}")
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())

        if sampler == "mala":
            noise = 1.0  # Metropolis-adjusted Langevin has no noise scale of its own
        gen = _generator(self.device, seed)
        if sampler == "aggregate":
            if self.aggregate is None:
                raise ValueError("sampler 'aggregate' needs fit_aggregate(training sentences) first")
            mu, chol = self.aggregate
            eps = torch.randn(n, self.latent_dim, generator=gen, device=self.device, dtype=mu.dtype)
            z, info = (mu + eps @ chol.T).to(self.model.dtype), {"z_at": {}, "energies": []}
            steps, noise, trace_at, profile = 0, 1.0, [], False
        else:
            with torch.no_grad():
                z, info = self.model.sample_prior(n, steps, step_size, gen, noise, sampler=sampler,
                                                  trace=profile, trace_at=tuple(trace_at),
                                                  record=self.model.energy)
        ids = self._decode_z(z, decode, temperature, seed, max_len)
        trace = [TracePoint(k, zk.detach(), self._energy(zk),
                            self.decode(self._decode_z(zk, decode, temperature, seed, max_len)))
                 for k, zk in sorted(info["z_at"].items())]
        return Samples(z=z, energy=self._energy(z), ids=ids, sentences=self.decode(ids),
                       steps=steps, step_size=step_size, noise=noise, decode=decode, seed=seed,
                       trace=trace, profile=info["energies"] if profile else None,
                       sampler=sampler, accept=info.get("accept"))

    def sample(self, n: int, steps: int | None = None, step_size: float | None = None,
               decode: str = "sample", temperature: float = 1.0, seed: int | None = None,
               max_len: int | None = None) -> list[str]:
        """n sentences from the model: z by the prior chain, x ~ p(x|z). See `sample_chains`."""
        return self.sample_chains(n, steps, step_size, decode, temperature, seed, max_len).sentences

    @torch.no_grad()
    def _energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.energy(z)

    @torch.no_grad()
    def _decode_z(self, z: torch.Tensor, decode: str, temperature: float, seed: int,
                  max_len: int) -> torch.Tensor:
        """One sentence per z, `batch_size * 4` at a time (bounded logits memory). -> (n, L)."""
        gen = _generator(self.device, seed + _DECODE_SEED_OFFSET)
        parts = [self.model.decoder.generate(z[i:i + 4 * self.batch_size], max_len=max_len,
                                             greedy=decode == "greedy", temperature=temperature,
                                             generator=gen)
                 for i in range(0, z.size(0), 4 * self.batch_size)]
        width = max(p.size(1) for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.size(1)), value=PAD_ID)
                          for p in parts])

    # ---- posterior, scores, reconstructions ---------------------------------------------
    def infer(self, sentences: Sequence[str | Sequence[str]], steps: int | None = None,
              seed: int | None = 0, step_size: float | None = None) -> torch.Tensor:
        """z ~ short-run posterior chain p(z|x) for each sentence: the run's reading chain (K1
        steps of read_schedule at read_noise1 where the run sets them, else its training chain)
        from the run's start (g(x) or N(0, I)). -> z: (B, D), in input order. Use `encode` to see
        which words were unknown."""
        return self._infer(self.encode(sentences).ids, steps, seed, step_size)

    def _infer(self, ids: list[list[int]], steps, seed, step_size) -> torch.Tensor:
        gen = None if seed is None else _generator(self.device, seed)
        z = torch.empty(len(ids), self.latent_dim, device=self.device)
        for pos, x in self._chunks(ids):
            z[pos.to(self.device)], _ = self.model.infer(x, steps, step_size, gen, read=True)
        return z

    def fit_aggregate(self, sentences: Sequence[str | Sequence[str]], seed: int = 0) -> dict:
        """Fit a full-covariance Gaussian N(mu, S) to the aggregate posterior: the codes `infer`
        gives `sentences` (training sentences). `sample_chains(sampler="aggregate")` then draws
        z from it: the ex-post density of two-stage VAEs and RAEs, what a user would fit instead
        of an EBM. Returns {sentences, mean_norm, mean_std}."""
        z = self.infer(sentences, seed=seed).double()
        mu = z.mean(0)
        cov = torch.cov(z.T) + 1e-6 * torch.eye(z.size(1), dtype=z.dtype, device=z.device)
        self.aggregate = (mu, torch.linalg.cholesky(cov))
        return {"sentences": len(z), "mean_norm": float(mu.norm()),
                "mean_std": float(cov.diagonal().sqrt().mean())}

    @torch.no_grad()
    def log_joint(self, sentences: Sequence[str | Sequence[str]], z: torch.Tensor) -> torch.Tensor:
        """log p_alpha(z) + log p_beta(x|z) without log Z(alpha) (LatentEBM.log_joint) for
        sentence i and z[i]. z: (B, D) -> (B,)."""
        ids = self.encode(sentences).ids
        if z.shape != (len(ids), self.latent_dim):
            raise ValueError(f"z must be ({len(ids)}, {self.latent_dim}), got {tuple(z.shape)}")
        z = z.to(self.device)
        out = torch.empty(len(ids), device=self.device)
        for pos, x in self._chunks(ids):
            pos = pos.to(self.device)
            out[pos] = self.model.log_joint(x, z[pos])
        return out

    @torch.no_grad()
    def _log_px(self, ids: list[list[int]], z: torch.Tensor) -> tuple[torch.Tensor, int]:
        """log p(x|z) per sentence (B,), and the number of scored tokens."""
        out, tokens = torch.empty(len(ids), device=self.device), 0
        for pos, x in self._chunks(ids):
            pos = pos.to(self.device)
            out[pos] = self.model.decoder.log_prob(x, z[pos])
            tokens += int(scored_tokens(x).sum())
        return out, tokens

    def reconstruct(self, sentences: Sequence[str | Sequence[str]], steps: int | None = None,
                    seed: int | None = 0, max_len: int | None = None) -> Reconstruction:
        """Posterior inference, then greedy decoding from the inferred z."""
        enc = self.encode(sentences)
        z = self._infer(enc.ids, steps, seed, None)
        longest = max(len(s) for s in enc.ids) + 1
        hyp = self._decode_z(z, "greedy", 1.0, 0, max_len or 2 * longest + 5)
        log_px, tokens = self._log_px(enc.ids, z)
        accuracy, per_sentence = token_accuracy(enc.ids, hyp)
        return Reconstruction(z=z, sentences=self.decode(hyp),
                              references=[" ".join(self.vocab.decode(s)) for s in enc.ids],
                              token_accuracy=accuracy,
                              nll_per_token=-float(log_px.sum()) / tokens, tokens=tokens,
                              n_unk=enc.n_unk, per_sentence_accuracy=per_sentence)

    def interpolate(self, a: str | Sequence[str], b: str | Sequence[str], points: int = 8,
                    steps: int | None = None, seed: int | None = 0,
                    max_len: int | None = None) -> Interpolation:
        """Infer z_a, z_b (as `reconstruct([a, b])` with the same seed), decode greedily at
        `points` evenly spaced t in [0, 1]; the endpoints are exactly z_a and z_b."""
        if points < 2:
            raise ValueError(f"points must be >= 2 (the two endpoints), got {points}")
        enc = self.encode([a, b])
        z_ab = self._infer(enc.ids, steps, seed, None)
        t = torch.linspace(0, 1, points, device=self.device).unsqueeze(1)
        z = (1 - t) * z_ab[0] + t * z_ab[1]
        longest = max(len(s) for s in enc.ids) + 1
        ids = self._decode_z(z, "greedy", 1.0, 0, max_len or 2 * longest + 5)
        return Interpolation(t=t.squeeze(1), z=z, sentences=self.decode(ids), n_unk=enc.n_unk)


def load(run_dir: str | Path, device: str | torch.device = "cpu", precision: str | None = None,
         compile: bool = False, average: bool = True) -> TextEBM:
    """Load a run folder (config.json, vocab.txt, checkpoint.pt; weights only, no pickles).
    A path to checkpoint.pt itself also works. `average`: read the run with its weight average
    where it kept one (train.ema > 0, textebm.ema); False: with its last weights (`TextEBM.weights`
    says which). `precision`: fp32, bf16 or auto for the decoder's compute (common.precision; default: what
    the run trained in, its recorded precision_used);
    `TextEBM.precision` says what was picked. `compile`: run the
    prior chain compiled (textebm.langevin.CompiledChain). Raises CheckpointError for a missing,
    corrupted or mismatched run."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name == CHECKPOINT:
        run_dir = run_dir.parent
    cfg, vocab = load_run_files(run_dir)
    payload = load_checkpoint(run_dir, map_location=device)
    state = payload.get("model") if isinstance(payload, dict) else None
    averaged = average and isinstance(payload, dict) and isinstance(payload.get(EMA_KEY), dict)
    if averaged:
        state = payload[EMA_KEY]
    if not isinstance(state, dict):
        raise CheckpointError(f"{run_dir / CHECKPOINT} holds no model weights")
    model = build_model(cfg, device, precision or cfg.train.precision_used or "fp32", compile)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), "")
        raise CheckpointError(f"{run_dir}: the weights do not match config.json / vocab.txt "
                              f"({first[:160]})") from None
    return TextEBM(model, vocab, cfg, run_dir, int(payload.get("step", 0)),
                   weights="average" if averaged else "last")


def profile_summary(profile: torch.Tensor, at: Sequence[int] = (), points: int = 10) -> list[dict]:
    """Mean and std over chains of E(z_k) at the steps `at` plus `points` evenly spaced steps.
    profile: (steps+1, n) -> [{"step", "mean", "std"}] sorted by step."""
    last = profile.size(0) - 1
    steps = sorted({int(k) for k in at if 0 <= k <= last}
                   | {round(i * last / max(points - 1, 1)) for i in range(points)})
    std = profile.std(1) if profile.size(1) > 1 else torch.zeros(profile.size(0))
    return [{"step": k, "mean": float(profile[k].mean()), "std": float(std[k])} for k in steps]


def plot_energy_profile(profile: torch.Tensor, png: str | Path, marks: Sequence[int] = ()) -> Path:
    """Save E(z_k) = -f(z_k) along the prior chains, mean ± one std over chains vs step k
    (paper Table 3 / Figure 3, bottom). profile: (steps+1, n). Dashed lines at `marks`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = profile.detach().double().cpu()
    mean = p.mean(1)
    std = p.std(1) if p.size(1) > 1 else torch.zeros_like(mean)
    k = torch.arange(p.size(0))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(k, mean, label=f"mean over {p.size(1)} chains")
    ax.fill_between(k, mean - std, mean + std, alpha=0.3, label="± 1 std")
    for m in marks:
        ax.axvline(m, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="Langevin step k", ylabel="E(z_k) = -f(z_k)",
           title="energy profile of the prior chains")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return Path(png)
