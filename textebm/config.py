"""Dataclass configs, one per component; their defaults are the project's default recipe, and
`build_config` makes a run's config from corpus, recipe, TOML file and flags in one written order.

Values the paper publishes: z in R^32, EBM 32-200-200-1 LeakyReLU(0.2) (Table 6), decoder sizes
(Table 7), K0=60 s0=0.4 K1=20 s1=0.1 (Table 5), Adam, ~40,000 updates (B.1). Values the paper
does not publish (learning rates, batch size, clipping, how z enters the LSTM) are project
choices, documented here and recorded in every run's config.json. The paper's chain settings are the
`paper` recipe.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from common.precision import PRECISIONS

# Paper Table 7: (embedding, hidden) of the one-layer LSTM decoder per corpus. `demo` and user
# corpora are ours: small enough to train on a laptop CPU in minutes.
DECODER_SIZES = {"ptb": (128, 512), "snli": (256, 256), "yahoo": (512, 1024), "demo": (64, 128)}
DEFAULT_SIZES = (128, 512)


# The project's default training recipe (`coherent`: the `encoder` recipe, RECIPES below, with a
# bounded slope and a warmer posterior) is what the field defaults say; each value's evidence is
# here. `SRI_SCHEDULE` is the posterior schedule of the authors' own short-run-inference text code
# (bpucla/sri_text); noise 0.2 on it, from an amortized start g(x), keeps the latent in use where
# paper Table 5's chain collapses it (docs/latent-study.md).
SRI_SCHEDULE = [0.8, 0.7, 0.6, 0.5, 0.2, 0.2, 0.1, 0.1, 0.05]
# The prior chain with a cold posterior (docs/latent-study.md): 200 steps instead of 60, so the
# EBM's negatives can reach where z+ lies. The evidence is thin: one run gave topic probe 93.0%
# against 78.8% at 60 steps, two seeds after the encoder fix 58.6% and 86.8%; every 200-step run
# kept gap >= 0.56 and <= 10.1% impossible samples. A colder chain for samples than for training
# (studies/sample_noise.py: 10.3% -> 8.8% impossible at +1% NLL/token, 5,000 samples).
PRIOR_STEPS = 200
SAMPLE_NOISE = 0.9
# The default posterior chain from g(x) stops after the schedule's first 10 steps: the 10 more
# small steps of K1 = 20 lowered the NLL at the chain's z by only 0.005-0.013 nats/token, and on
# demo 4 seeds at K1 = 10 against 3 runs at 20 gave the same spread of every diagnostic in 1.4x
# fewer seconds per run; on PTB (500 iterations) its samples were better too (5-gram FPPL 889
# against 1299 at K1 = 20 and 996 for `paper`; docs/latent-study.md, K1 and PTB tables).
POSTERIOR_STEPS = 10
# Reading a trained model is not training it: from g(x), the schedule's small steps without noise
# fit the posterior better than the training chain's large early steps, which overshoot (on the
# four K1 = 10 demo seeds: NLL/token at the chain's z lower on all four, single-chain topic probe
# 97.4/76.4/89.6/94.2% against 93.4/58.8/65.8/77.8%; docs/latent-study.md). Training needs the
# large steps (small-step training collapsed the posterior means onto each other).
READ_SCHEDULE = SRI_SCHEDULE[4:]
# The `steady` recipe's prior chain, one per EBM update (two updates per iteration): 150 steps,
# so that two chains cost 1.5x one chain of PRIOR_STEPS. Samples hardly depend on the length past 50 steps (studies/sample_noise.py --steps 50,100,400 on two trained
# models: impossible share within 1.2 points, NLL/token within 0.006), so what matters is where
# the chain settles.
PRIOR_STEPS_EACH = 150
# The default `coherent` recipe (docs/coherence.md, issue: a coherent model) is `encoder` with the
# energy's slope bounded (GRAD_PENALTY x (|dE/dz+|^2 + |dE/dz-|^2)) and a warmer posterior chain
# (noise COHERENT_NOISE): the penalty alone makes the prior's samples land where the codes are
# (within 0.6 nats against 50-65), but lets the codes carry 3.4-3.6 nats/token that the decoder
# then fails to generate from (16-19% impossible samples); the posterior noise sets how much they
# carry: 2.5 nats/token at 0.5, 1.2 at 0.7, 0.55-0.66 at 0.8, 0.16 at 0.9, 0.01 at 1. On 4 demo
# seeds: samples 0.7-0.9 nats above the codes, 10.0% impossible samples against `encoder`'s 8.2%.
GRAD_PENALTY, COHERENT_NOISE = 1.0, 0.8
# The `pretrained` recipe, the default of `textebm train ptb` (docs/time-to-quality.md, issue: PTB
# time to quality) is `coherent` after PRETRAIN_STEPS iterations of amortized autoencoder
# pretraining (one decoder pass each, 0.73 s against 5.9 s for an iteration of Algorithm 1 on one
# thread), with the decoder learning at z + PRETRAIN_NOISE * N(0, I) throughout: without the smear
# the pretrained codes reached |z| of about 11 and the prior's samples missed them (5-gram RPPL
# 629 at 120 minutes); with it they stay within the N(0, I) base's reach.
PRETRAIN_STEPS, PRETRAIN_NOISE = 3000, 0.5


@dataclass
class PriorConfig:
    """f_alpha: MLP latent_dim -> hidden -> hidden -> 1; energy E(z) = -f_alpha(z)."""
    latent_dim: int = 32
    hidden: int = 200
    leak: float = 0.2
    kind: str = "ebm"  # "ebm" (learned exponential tilt of N(0,I)) or "gaussian" (fixed N(0,I))
    base: str = "standard"  # the Gaussian the EBM tilts: standard (N(0, I), the paper) or fitted
                            # (N(mu, Sigma), a moving average of the posterior codes' moments)
    base_decay: float = 0.99  # decay of that moving average, per iteration


@dataclass
class DecoderConfig:
    """p_beta(x|z): one-layer LSTM; z is concatenated to every input embedding and h0 = Linear(z)."""
    vocab_size: int = 10000
    embed: int = 128
    hidden: int = 512
    latent_dim: int = 32
    dropout: float = 0.5
    init_range: float = 0.1
    word_dropout: float = 0.0  # share of input words read as <unk> in training (Bowman et al. 2016)


@dataclass
class LangevinConfig:
    """Short-run chains: z <- z - (s^2/2) dU/dz + noise*s*eps (paper eq. 9 with s' = s^2/2).

    The field defaults are the project's default recipe (`coherent`); paper Table 5 is the `paper`
    recipe (RECIPES). A config.json written before a field existed loads that field as the code
    then ran it (LEGACY), not as today's default.
    """
    k0: int = PRIOR_STEPS        # paper 60
    s0: float = 0.4
    noise0: float = 1.0          # prior chain noise scale in training (1 = Langevin)
    prior_sampler: str = "chain"  # the prior chain's rule, in training and for samples: chain
                                  # (short-run Langevin) or mala (Metropolis-adjusted: p_alpha itself)
    sample_noise0: float | None = SAMPLE_NOISE  # prior chain noise when drawing samples; None = noise0
    sample_k0: int | None = None  # prior chain steps when drawing samples; None = k0
    prior_buffer: int = 0         # persistent prior chains in training: a bank of this many z-
                                  # chains, each update continuing a random draw of them (0: every
                                  # chain starts from N(0, I), as in the paper)
    prior_reinit: float = 0.05    # share of the drawn persistent chains restarted from N(0, I)
    k1: int = POSTERIOR_STEPS    # paper 20
    s1: float = 0.05             # paper 0.1; the constant step where no schedule is set
    s1_schedule: list[float] = field(default_factory=lambda: list(SRI_SCHEDULE))  # per-step sizes;
                                 # the last one repeats ([]: the constant s1, as in the paper)
    noise1: float = COHERENT_NOISE  # posterior chain noise scale; < 1 samples a colder posterior (paper 1)
    init1: str = "encoder"       # where the posterior chain starts: noise (N(0,I), the paper), persistent
                                 # (the sentence's last z+), encoder (an amortized guess)
    # The posterior chain that reads a trained model (infer, reconstruct, interpolate, the topic
    # probe): its step sizes ([] = the training chain's) and noise (None = noise1), K1 steps from
    # the same start. Training, the gap, AU, I(x;z) and the NLL keep the training chain: they
    # need its spread, which a chain without noise does not have.
    read_schedule: list[float] = field(default_factory=lambda: list(READ_SCHEDULE))
    read_noise1: float | None = 0.0

    def sampling_noise(self) -> float:
        """The prior chain's noise scale for samples (sample, evaluate, validation samples)."""
        return self.noise0 if self.sample_noise0 is None else self.sample_noise0

    def sampling_steps(self) -> int:
        """The prior chain's length for samples (sample, evaluate, validation samples)."""
        return self.k0 if self.sample_k0 is None else self.sample_k0

    def posterior_steps(self, read: bool = False) -> float | list[float]:
        """The posterior chain's step size: the schedule where one is set, else s1. `read`: the
        reading chain's (read_schedule where set)."""
        if read and self.read_schedule:
            return list(self.read_schedule)
        return list(self.s1_schedule) if self.s1_schedule else self.s1

    def posterior_noise(self, read: bool = False) -> float:
        """The posterior chain's noise scale; `read`: the reading chain's."""
        return self.read_noise1 if read and self.read_noise1 is not None else self.noise1


@dataclass
class EncoderConfig:
    """Amortized initializer of the posterior chain (init1 = "encoder"): a bidirectional LSTM over
    the sentence, trained by regression onto the chain's end point z+ (it never replaces the
    chain, it only starts it nearer its target)."""
    embed: int = 64
    hidden: int = 128
    lr: float = 1e-3


@dataclass
class TrainConfig:
    """Algorithm 1. Learning rates, batch size and clipping are ours (not in the paper)."""
    corpus: str = "ptb"
    recipe: str | None = None  # the --recipe the run was built from (build_config); options may
                               # have changed it since, and config.json records what ran
    max_steps: int = 40000
    time_budget: float | None = None  # minutes of training (summed over resumes); None: no limit
    batch_size: int = 64
    lr_prior: float = 1e-3   # with energy_reg; measured in studies/latent_study.py (docs/latent-study.md)
    lr_decoder: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    clip_decoder: float = 5.0
    clip_prior: float = 1.0
    energy_reg: float = 0.01  # lambda of lambda*(E(z+)^2 + E(z-)^2) in the prior loss: keeps f bounded
    grad_penalty: float = GRAD_PENALTY  # gamma of gamma*(|dE/dz(z+)|^2 + |dE/dz(z-)|^2) in the prior loss:
                               # bounds the energy's slope where the chains and codes are
    prior_start: int = 0      # iterations before the EBM learns: it stays at its init until then,
                              # and the prior chain (needed only for its update) is not run
    pretrain_steps: int = 0   # iterations at the start that train decoder and encoder as an
                              # amortized MAP autoencoder (train.pretrain_step): z = g(x), no chains
    decoder_noise: float = 0.0  # sigma: the decoder learns at z+ + sigma * N(0, I), not z+ (a fixed-
                                # variance Gaussian posterior, as in a VAE's reconstruction term):
                                # bounds what the codes carry and smooths the decoder across them
    prior_updates: int = 1    # EBM updates per iteration, each against a fresh prior chain
    prior_chains: int = 0     # prior chains (z-) per EBM update; 0: one per sentence of the batch
    lr_final: float = 1.0     # every learning rate falls linearly to lr_final x its value at max_steps
    ema: float = 0.0          # decay of an average of the weights that a trained run is read with
                              # (textebm.ema); 0: none, the run is read with its last weights
    seed: int = 0
    eval_every: int = 1000
    save_every: int = 1000
    eval_sentences: int = 500
    samples_shown: int = 3
    train_split: str = "train"
    max_len: int = 400
    on_long: str = "drop"    # longer lines: drop or cut (how the corpus was read)
    tokenizer: str = "word"
    vocab_size: int | None = None
    min_count: int = 1
    precision: str = "fp32"       # fp32, bf16 or auto (common.precision)
    precision_used: str | None = None  # what the run computes in; auto's pick, fixed at the start
    compile: bool = False         # the prior chain's steps compiled by torch.compile (same chain)


@dataclass
class RunConfig:
    prior: PriorConfig = field(default_factory=PriorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    langevin: LangevinConfig = field(default_factory=LangevinConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "RunConfig":
        """Catch impossible settings before a run folder is written (ValueError, one line)."""
        p, d, lc, t = self.prior, self.decoder, self.langevin, self.train
        if p.kind not in ("ebm", "gaussian"):
            raise ValueError(f"prior must be 'ebm' or 'gaussian', got {p.kind!r}")
        if p.base not in ("standard", "fitted") or not 0 < p.base_decay < 1:
            raise ValueError(f"prior base must be 'standard' or 'fitted' with decay in (0, 1), "
                             f"got {p.base!r}, {p.base_decay}")
        if d.latent_dim != p.latent_dim:
            raise ValueError("decoder.latent_dim must equal prior.latent_dim")
        if min(lc.k0, lc.k1) < 0 or min([lc.s0, lc.s1, *lc.s1_schedule, *lc.read_schedule]) <= 0:
            raise ValueError("Langevin steps must be >= 0 and step sizes > 0")
        if min(lc.noise0, lc.noise1, lc.sampling_noise(), lc.posterior_noise(read=True)) < 0:
            raise ValueError("Langevin noise scales must be >= 0")
        if lc.prior_buffer < 0 or not 0 <= lc.prior_reinit <= 1 or (lc.sample_k0 or 0) < 0 \
                or t.grad_penalty < 0 or t.decoder_noise < 0:
            raise ValueError("prior_buffer, sample_k0, grad_penalty, decoder_noise must be >= 0 and "
                             "prior_reinit in [0, 1]")
        if lc.prior_sampler not in ("chain", "mala"):
            raise ValueError(f"prior_sampler must be 'chain' or 'mala', got {lc.prior_sampler!r}")
        if lc.init1 not in INIT1:
            raise ValueError(f"posterior chain start (init1) must be one of {INIT1}, got {lc.init1!r}")
        if t.batch_size < 1 or t.max_steps < 0 or t.prior_start < 0 or t.prior_updates < 1 \
                or t.prior_chains < 0:
            raise ValueError("batch size, prior updates must be >= 1 and max steps, prior start, "
                             "prior chains >= 0")
        if t.pretrain_steps < 0 or (t.pretrain_steps and lc.init1 != "encoder"):
            raise ValueError("pretrain steps must be >= 0, and pretraining needs the encoder "
                             "(posterior init 'encoder'); PTB's default recipe pretrains, so "
                             "add --pretrain-steps 0 or --recipe coherent to start from noise")
        if t.time_budget is not None and t.time_budget <= 0:
            raise ValueError("time budget must be > 0 minutes")
        if t.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
        if t.tokenizer not in ("word", "spm"):
            raise ValueError(f"tokenizer must be 'word' or 'spm', got {t.tokenizer!r}")
        if not 0 <= t.ema < 1:
            raise ValueError(f"ema (the weight average's decay) must be in [0, 1), got {t.ema}")
        if min(t.lr_prior, t.lr_decoder, t.lr_final) < 0 or not 0 <= d.dropout < 1 or not 0 <= d.word_dropout < 1:
            raise ValueError("learning rates must be >= 0 and dropout, word dropout in [0, 1)")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A stored config (config.json); a field it lacks loads as LEGACY says the run ran it."""
        return cls(**{f.name: _build(_COMPONENTS[f.name], {**LEGACY.get(f.name, {}), **d.get(f.name, {})})
                      for f in fields(cls)})


_COMPONENTS = {"prior": PriorConfig, "decoder": DecoderConfig, "langevin": LangevinConfig,
               "encoder": EncoderConfig, "train": TrainConfig}
INIT1 = ("noise", "persistent", "encoder")

# Named training recipes (`--recipe NAME`): the posterior chain, the prior chain's length and
# sampling noise that go with it, and how the EBM learns beside them. `coherent` is the default
# (the field defaults above; `pretrained`, coherent after pretraining, on PTB), `encoder` the
# default before it; `paper` is Table 5 and Algorithm 1
# exactly; `sri` is the schedule of bpucla/sri_text from N(0, I). `steady` (docs/latent-study.md,
# the prior-updates table and "Eight seeds") is `encoder` with a late EBM (it waits 50
# iterations, so that the decoder first learns to read z: topic probe >= 98% on 7 demo seeds of 8,
# against 5 of 8 above 90% for `encoder`), two EBM updates per iteration, each against its own prior chain of PRIOR_STEPS_EACH steps, and a moving
# average of the weights (EMA 0.995). It is not the default: it meets all four seed-dependent demo
# targets on 3 seeds of 8 (`encoder`: 2); it trains in 1.16-1.3x the default's time; and at PTB's
# 500-iteration study budget its averaged EBM doubles the 5-gram FPPL (1198 read with the average,
# 538 with the last weights; `paper` 996; studies/ema_parts.py).
_ALGORITHM_1 = {"prior_start": 0, "prior_updates": 1, "ema": 0.0, "grad_penalty": 0.0}
PAPER = {"langevin": {"k0": 60, "s0": 0.4, "noise0": 1.0, "sample_noise0": None, "k1": 20, "s1": 0.1,
                      "s1_schedule": [], "noise1": 1.0, "init1": "noise", "read_schedule": [],
                      "read_noise1": None},
         "train": _ALGORITHM_1}
_ENCODER = {"langevin": {"k0": PRIOR_STEPS, "s0": 0.4, "noise0": 1.0, "sample_noise0": SAMPLE_NOISE,
                         "k1": POSTERIOR_STEPS, "s1": 0.05, "s1_schedule": SRI_SCHEDULE,
                         "noise1": 0.2, "init1": "encoder", "read_schedule": READ_SCHEDULE,
                         "read_noise1": 0.0},
            "train": _ALGORITHM_1}
_COHERENT = {"langevin": {**_ENCODER["langevin"], "noise1": COHERENT_NOISE},
             "train": {**_ALGORITHM_1, "grad_penalty": GRAD_PENALTY}}
RECIPES: dict[str, dict[str, dict]] = {
    "coherent": _COHERENT,
    "pretrained": {"langevin": _COHERENT["langevin"],
                   "train": {**_COHERENT["train"], "pretrain_steps": PRETRAIN_STEPS,
                             "decoder_noise": PRETRAIN_NOISE}},
    "encoder": _ENCODER,
    "paper": PAPER,
    "sri": {"langevin": {**_ENCODER["langevin"], "k1": 20, "init1": "noise", "read_schedule": [],
                         "read_noise1": None},
            "train": _ALGORITHM_1},
    "steady": {"langevin": {**_ENCODER["langevin"], "k0": PRIOR_STEPS_EACH},
               "train": {**_ALGORITHM_1, "prior_start": 50, "prior_updates": 2, "ema": 0.995}},
    # The fair Gaussian baseline (issue: a coherent model): a fixed N(0, I) prior trained and
    # sampled as a proper Gaussian-prior model, the posterior chain at noise 1 (the posterior
    # itself, not a cold near-MAP code) and samples from N(0, I) itself (noise 1), where
    # `--prior gaussian` alone keeps the EBM recipe's cold posterior and colder samples.
    "gaussian": {"prior": {"kind": "gaussian"},
                 "langevin": {**_ENCODER["langevin"], "noise1": 1.0, "sample_noise0": None,
                              "read_noise1": 0.0},
                 "train": _ALGORITHM_1},
}
DEFAULT_RECIPE = "coherent"
# Where a corpus' measurements chose another default: `textebm train ptb` pretrains first.
CORPUS_RECIPES = {"ptb": "pretrained"}
# What a config.json that lacks a field ran: the code before that field existed, which is the
# paper's chain for the chain fields (their defaults were paper Table 5 until the defaults became
# the `encoder` recipe; grad_penalty was 0 until `coherent`). Fields not named here were added with
# their default as the old behaviour.
LEGACY = {"langevin": PAPER["langevin"], "train": _ALGORITHM_1}
# The corpus layer: paper Table 7 decoder sizes where published; `demo` is small and quick (a few
# minutes on 2 CPU cores). On demo: no dropout and a faster decoder: on 10k sentences and 1,500
# steps the decoder is undertrained, not overfitted (samples the grammar cannot emit: 18% -> 11%,
# docs/latent-study.md).
CORPUS_SETTINGS = {
    "demo": {"train": {"max_steps": 1500, "batch_size": 64, "eval_every": 250, "save_every": 250,
                       "lr_decoder": 3e-3},
             "decoder": {"dropout": 0.0}},
}


def recipe(name: str) -> dict[str, dict]:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return RECIPES[name]


def default_recipe(corpus: str) -> str:
    """The recipe `textebm train CORPUS` runs without --recipe."""
    return CORPUS_RECIPES.get(corpus, DEFAULT_RECIPE)


def setting_flags(setting: str, toml_dir: Path) -> list[str]:
    """`textebm train` flags for a study's or bench's setting: `default` is the `encoder` recipe
    (the default when the studies' first rows were measured, which say `default`), a recipe's name
    runs that recipe, and any other name is TOML_DIR/<name>.toml on top of `encoder`. A `:bf16`
    or `:fp32` tail sets the precision (`pretrained:bf16`), so a precision is measured as a lever
    on one setting without a second file that repeats it."""
    name, _, precision = setting.partition(":")
    tail = []
    if precision:
        if precision not in PRECISIONS:
            raise ValueError(f"setting {setting!r}: precision must be one of {', '.join(PRECISIONS)}")
        tail = ["--precision", precision]
    if name == "default":
        return ["--recipe", "encoder", *tail]
    if name in RECIPES:
        return ["--recipe", name, *tail]
    toml = Path(toml_dir) / f"{name}.toml"
    if not toml.exists():
        raise ValueError(f"unknown setting {name!r}: no {toml}")
    return ["--recipe", "encoder", "--config", str(toml), *tail]


def build_config(corpus: str, recipe_name: str | None = None, toml: dict | None = None,
                 flags: dict | None = None) -> RunConfig:
    """A run's config, in one order, each layer overriding the one before:
    field defaults (the `coherent` recipe) -> corpus (decoder sizes, demo's short schedule) ->
    recipe (`recipe_name`, default default_recipe(corpus)) -> TOML file sections -> command-line flags
    ({"train": {"seed": 1}, ...}; None values are not set). `--s1` without `--s1-schedule` means
    a constant step: it clears the recipe's schedule. Validated before it is returned."""
    embed, hidden = DECODER_SIZES.get(corpus, DEFAULT_SIZES)
    cfg = RunConfig()
    cfg.decoder.embed, cfg.decoder.hidden = embed, hidden
    cfg.train.corpus = corpus
    override(cfg, CORPUS_SETTINGS.get(corpus, {}))
    recipe_name = recipe_name or default_recipe(corpus)
    override(cfg, recipe(recipe_name))
    cfg.train.recipe = recipe_name
    override(cfg, toml or {})
    flags = {s: {k: v for k, v in d.items() if v is not None} for s, d in (flags or {}).items()}
    lflags = flags.get("langevin", {})
    if "s1" in lflags and "s1_schedule" not in lflags:
        lflags["s1_schedule"] = []
    override(cfg, flags)
    return cfg.validate()


def parse_schedule(text: str) -> list[float]:
    """'0.8,0.5,0.1' -> [0.8, 0.5, 0.1]; 'none' or '' -> [] (a constant step s1)."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"a step-size schedule is comma-separated numbers, got {text!r}") from None


def _build(cls, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**values)


def for_corpus(corpus: str) -> RunConfig:
    """The defaults for a corpus under the default recipe (build_config with no other layer)."""
    return build_config(corpus)


def parse_settings(items) -> dict[str, dict]:
    """["train.ema=0.995", "langevin.k0=150"] -> {"train": {"ema": 0.995}, "langevin": {"k0": 150}}:
    the SECTION.KEY=JSON settings the benchmarks take, in the form override() applies."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, val = item.partition("=")
        section, dot, name = key.partition(".")
        if not (eq and dot and section and name):
            raise ValueError(f"{item!r}: a setting is SECTION.KEY=JSON")
        out.setdefault(section, {})[name] = json.loads(val)
    return out


def override(cfg: RunConfig, updates: dict[str, dict]) -> RunConfig:
    """Apply {"train": {"batch_size": 32}, ...} (from a TOML file or the command line)."""
    for section, values in updates.items():
        if section not in _COMPONENTS:
            raise ValueError(f"unknown config section [{section}]; use one of {list(_COMPONENTS)}")
        part = getattr(cfg, section)
        for k, v in values.items():
            if not hasattr(part, k):
                raise ValueError(f"unknown key {section}.{k}")
            setattr(part, k, list(v) if isinstance(v, list) else v)
    return cfg
