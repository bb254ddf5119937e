"""Dataclass configs, one per component, and the recipes; `build_config` makes a run's config
from corpus, recipe, TOML file and command-line settings in one written order.

Every setting is declared once, here: a field with its default and its help (`setting`). The
command line reaches each as `--set SECTION.KEY=VALUE` (parsed by the field's type,
`parse_settings`), `textebm config` prints them all as TOML (`to_toml`) that `--config` reads
back, and the old `textebm train` flags translate through one table (`OLD_FLAGS`). The field
defaults are the project's default recipe (`coherent`); the other recipes are one table
(`RECIPES`). What a resumed run may change is `resume_config`'s rule (`RESUME_MAY_CHANGE`).

Values the paper publishes: z in R^32, EBM 32-200-200-1 LeakyReLU(0.2) (Table 6), decoder sizes
(Table 7), K0=60 s0=0.4 K1=20 s1=0.1 (Table 5), Adam, ~40,000 updates (B.1). Values the paper
does not publish (learning rates, batch size, clipping, how z enters the LSTM) are project
choices, recorded in every run's config.json; the paper's chain settings are the `paper` recipe.
What the experiments behind each project choice found: docs/recipes.md.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


# Paper Table 7 sizes per corpus; demo's are ours (docs/recipes.md#decoder-sizes-decoder_sizes).
DECODER_SIZES = {"ptb": (128, 512), "snli": (256, 256), "yahoo": (512, 1024), "demo": (64, 128)}
DEFAULT_SIZES = (128, 512)

# The default recipe's values; each one's evidence: docs/recipes.md, the section of its name.
SRI_SCHEDULE = [0.8, 0.7, 0.6, 0.5, 0.2, 0.2, 0.1, 0.1, 0.05]  # bpucla/sri_text's posterior schedule
PRIOR_STEPS = 200     # prior chain steps (paper 60): docs/recipes.md#prior_steps-and-sample_noise
SAMPLE_NOISE = 0.9    # prior chain noise for samples: docs/recipes.md#prior_steps-and-sample_noise
POSTERIOR_STEPS = 10  # posterior chain steps (paper 20): docs/recipes.md#posterior_steps
READ_SCHEDULE = SRI_SCHEDULE[4:]  # the reading chain: docs/recipes.md#read_schedule-the-reading-chain
PRIOR_STEPS_EACH = 150  # `steady`'s chain per EBM update: docs/recipes.md#prior_steps_each-steady
GRAD_PENALTY, COHERENT_NOISE = 1.0, 0.8  # `coherent`: docs/recipes.md#grad_penalty-and-coherent_noise-coherent
PRETRAIN_STEPS, PRETRAIN_NOISE = 3000, 0.5  # `pretrained`: docs/recipes.md#pretrain_steps-and-pretrain_noise-pretrained


def _precisions() -> tuple[str, ...]:
    from common.precision import PRECISIONS   # here, so that `import textebm.config` needs no torch
    return PRECISIONS


def setting(default, help: str):
    """A config field and its help: the one place a setting is declared. `--set`, `textebm config`
    and the command line's options read the help from the field's metadata."""
    if isinstance(default, list):
        return field(default_factory=functools.partial(list, default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class PriorConfig:
    """f_alpha: MLP latent_dim -> hidden -> hidden -> 1; energy E(z) = -f_alpha(z)."""
    latent_dim: int = setting(32, "Dimension of the latent z (paper 32).")
    hidden: int = setting(200, "Units of each of the EBM's two hidden layers (paper Table 6: 200).")
    leak: float = setting(0.2, "LeakyReLU slope of the EBM (paper 0.2).")
    kind: str = setting("ebm", "ebm (a learned exponential tilt of N(0,I)) or gaussian (a fixed "
                        "N(0,I): the baseline).")
    base: str = setting("standard", "The Gaussian the EBM tilts: standard (N(0,I), the paper) or "
                        "fitted (N(mu, Sigma), a moving average of the posterior codes' moments).")
    base_decay: float = setting(0.99, "Decay of that moving average, per iteration.")


@dataclass
class DecoderConfig:
    """p_beta(x|z): one-layer LSTM; z is concatenated to every input embedding and h0 = Linear(z)."""
    vocab_size: int = setting(10000, "Vocabulary size (set from the corpus when a run starts).")
    embed: int = setting(128, "Word embedding size (paper Table 7, per corpus).")
    hidden: int = setting(512, "LSTM hidden size (paper Table 7, per corpus).")
    latent_dim: int = setting(32, "Dimension of the z it reads (equal to prior.latent_dim).")
    dropout: float = setting(0.5, "Dropout in training (the chains run without it).")
    init_range: float = setting(0.1, "Weights start uniform in [-init_range, init_range].")
    word_dropout: float = setting(0.0, "Share of the decoder's input words read as <unk> in "
                                  "training (Bowman et al. 2016; 0: none).")


@dataclass
class LangevinConfig:
    """Short-run chains: z <- z - (s^2/2) dU/dz + noise*s*eps (paper eq. 9 with s' = s^2/2).

    The field defaults are the project's default recipe (`coherent`); paper Table 5 is the `paper`
    recipe (RECIPES). A config.json written before a field existed loads that field as the code
    then ran it (LEGACY), not as today's default. The reading chain (read_*) reads a trained model;
    training, the gap, AU, I(x;z) and the NLL keep the training chain, whose spread they need.
    """
    k0: int = setting(PRIOR_STEPS, "Prior chain steps in training (paper 60); also the sampling "
                      "chain's unless sample_k0 is set.")
    s0: float = setting(0.4, "Prior chain step size s (paper 0.4).")
    noise0: float = setting(1.0, "Prior chain noise scale in training (1: Langevin).")
    prior_sampler: str = setting("chain", "The prior chain's rule in training and for samples: "
                                 "chain (short-run Langevin) or mala (Metropolis-adjusted: samples "
                                 "p_alpha itself; noise0 does not apply).")
    sample_noise0: float | None = setting(SAMPLE_NOISE, "Prior chain noise scale when drawing "
                                          "samples (sample, evaluate, validation); none: noise0.")
    sample_k0: int | None = setting(None, "Prior chain steps when drawing samples; none: k0.")
    prior_buffer: int = setting(0, "Persistent prior chains in training: a bank of this many z- "
                                "chains, each update continuing a random draw of them (0: every "
                                "chain starts from N(0,I), as in the paper).")
    prior_reinit: float = setting(0.05, "Share of the drawn persistent chains restarted from N(0,I).")
    k1: int = setting(POSTERIOR_STEPS, "Posterior chain steps (paper 20).")
    s1: float = setting(0.05, "The constant posterior step size where no schedule is set (paper "
                        "0.1); given without s1_schedule it clears the recipe's schedule.")
    s1_schedule: list[float] = setting(SRI_SCHEDULE, "Posterior step sizes per step, e.g. "
                                       "0.8,0.5,0.2,0.1 (the last one repeats); none: the "
                                       "constant s1, as in the paper.")
    noise1: float = setting(COHERENT_NOISE, "Posterior chain noise scale (1: Langevin, the paper; "
                            "< 1 a colder posterior; 0 gradient descent).")
    init1: str = setting("encoder", "Where the posterior chain starts: noise (N(0,I), the paper), "
                         "persistent (the sentence's last z+) or encoder (an amortized guess).")
    read_schedule: list[float] = setting(READ_SCHEDULE, "Step sizes of the posterior chain that "
                                         "reads a trained model (infer, reconstruct, interpolate, "
                                         "the topic probe; K1 steps from the same start); none: "
                                         "the training chain's.")
    read_noise1: float | None = setting(0.0, "Noise scale of that reading chain; none: noise1.")

    def sampling_noise(self) -> float:
        """The prior chain's noise scale for samples (sample, evaluate, validation samples)."""
        return self.noise0 if self.sample_noise0 is None else self.sample_noise0

    def sampling_steps(self) -> int:
        """The prior chain's length for samples (sample, evaluate, validation samples)."""
        return self.k0 if self.sample_k0 is None else self.sample_k0

    def posterior_step_sizes(self, read: bool = False) -> float | list[float]:
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
    embed: int = setting(64, "Word embedding size of the encoder g(x).")
    hidden: int = setting(128, "Hidden size of each direction of its bidirectional LSTM.")
    lr: float = setting(1e-3, "Adam learning rate of the encoder.")
    free_bits: float = setting(0.0, "Amortized posterior (init1 = amortized): each latent "
                               "dimension's KL(q || N(0, I)), averaged over the batch, counts "
                               "at least this many nats in the ELBO (0: the plain ELBO).")


@dataclass
class TrainConfig:
    """Algorithm 1. Learning rates, batch size and clipping are ours (not in the paper)."""
    corpus: str = setting("ptb", "The corpus trained on (the command's CORPUS).")
    recipe: str | None = setting(None, "The --recipe the run was built from (build_config); "
                                 "settings may have changed it since, and config.json records "
                                 "what ran.")
    max_steps: int = setting(40000, "Training iterations (paper: ~40,000).")
    time_budget: float | None = setting(None, "Stop after this many minutes of training (validation "
                                        "not counted), counted over resumes (or at max_steps, "
                                        "whichever comes first); none: no limit.")
    batch_size: int = setting(64, "Sentences per mini-batch.")
    lr_prior: float = setting(1e-3, "Adam learning rate of the EBM (with energy_reg; "
                              "docs/recipes.md#the-ebms-learning-rate-trainlr_prior).")
    lr_decoder: float = setting(1e-3, "Adam learning rate of the decoder.")
    beta1: float = setting(0.5, "Adam beta1 of decoder and EBM.")
    beta2: float = setting(0.999, "Adam beta2 of decoder and EBM.")
    clip_decoder: float = setting(5.0, "Gradient-norm clip of the decoder.")
    clip_prior: float = setting(1.0, "Gradient-norm clip of the EBM.")
    energy_reg: float = setting(0.01, "lambda of lambda*(E(z+)^2 + E(z-)^2) in the prior loss: "
                                "keeps f bounded.")
    grad_penalty: float = setting(GRAD_PENALTY, "gamma of the slope penalty gamma*(|dE/dz+|^2 + "
                                  "|dE/dz-|^2) in the prior loss: bounds the energy's slope where "
                                  "the chains and codes are (0: none, the encoder recipe).")
    prior_start: int = setting(0, "Iterations before the EBM learns: it stays at its init, and the "
                               "prior chain (needed only for its update) is not run, until then.")
    pretrain_steps: int = setting(0, "Iterations at the start that train decoder and encoder as an "
                                  "amortized MAP autoencoder (z = g(x), no chains; several times "
                                  "faster per iteration); 0: none.")
    decoder_noise: float = setting(0.0, "sigma: the decoder learns at z+ + sigma*N(0,I), not z+ (a "
                                   "fixed-variance Gaussian posterior, as in a VAE's reconstruction "
                                   "term): bounds what the codes carry, smooths the decoder across them.")
    prior_updates: int = setting(1, "EBM updates per iteration, each against a fresh prior chain "
                                 "(1: Algorithm 1).")
    prior_chains: int = setting(0, "Prior chains (z-) per EBM update; 0: one per sentence of the "
                                "batch (Algorithm 1).")
    lr_final: float = setting(1.0, "Every learning rate falls linearly to lr_final x itself at "
                              "max_steps (1: constant).")
    ema: float = setting(0.0, "Decay of a moving average of the weights that sample, evaluate and "
                         "textebm.load read (e.g. 0.995; 0: none, the last weights).")
    seed: int = setting(0, "Random seed (data order, chains, init).")
    eval_every: int = setting(1000, "Validate every N steps (0: never).")
    save_every: int = setting(1000, "Checkpoint every N steps.")
    eval_sentences: int = setting(500, "Validation sentences read at each validation.")
    samples_shown: int = setting(3, "Prior samples printed at each validation.")
    train_split: str = setting("train", "Split to train on and build the vocabulary from (e.g. "
                               "valid where train is missing).")
    max_len: int = setting(400, "Longest sentence kept, in tokens.")
    on_long: str = setting("drop", "What to do with longer lines: drop or cut.")
    tokenizer: str = setting("word", "word, or spm (sentencepiece pieces learned on the training "
                             "split).")
    vocab_size: int | None = setting(None, "spm: number of pieces (none: 8000); word: largest "
                                     "vocabulary kept (none: every word).")
    min_count: int = setting(1, "Fewest occurrences of a word kept in the vocabulary.")
    precision: str = setting("fp32", "fp32, bf16 (bf16 compute; fp32 weights, normalisers and "
                             "chains) or auto (bf16 where this machine runs it fast).")
    precision_used: str | None = setting(None, "What the run computes in (auto's pick), fixed at "
                                         "the start and recorded.")
    compile: bool = setting(False, "Run the prior chain's steps compiled by torch.compile (the "
                            "same chain, faster; eager where compiling fails).")


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
        # The registries (textebm.prior, textebm.posterior) say which kinds exist; imported
        # here, not at the top, because they import these configs.
        from textebm.posterior import POSTERIORS
        from textebm.prior import PRIORS
        if p.kind not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {p.kind!r}")
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
        if lc.init1 not in POSTERIORS:
            raise ValueError(f"posterior (init1) must be one of {', '.join(POSTERIORS)}, "
                             f"got {lc.init1!r}")
        if t.batch_size < 1 or t.max_steps < 0 or t.prior_start < 0 or t.prior_updates < 1 \
                or t.prior_chains < 0:
            raise ValueError("batch size, prior updates must be >= 1 and max steps, prior start, "
                             "prior chains >= 0")
        if t.pretrain_steps < 0 or (t.pretrain_steps and not POSTERIORS[lc.init1].has_code):
            raise ValueError(f"pretrain steps must be >= 0, and pretraining needs a posterior with "
                             f"an amortized code (encoder or amortized, not {lc.init1}); PTB's "
                             f"default recipe pretrains, so add --set train.pretrain_steps=0 (was "
                             f"--pretrain-steps 0) or --recipe coherent to start from noise")
        if t.time_budget is not None and t.time_budget <= 0:
            raise ValueError("time budget must be > 0 minutes")
        if t.precision not in _precisions():
            raise ValueError(f"precision must be one of {', '.join(_precisions())}, got {t.precision!r}")
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

# Named training recipes (`--recipe NAME`), one table; what each is and the evidence for it:
# docs/recipes.md#the-named-recipes-recipes (`textebm config CORPUS --recipe NAME` prints one).
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
    # Amortized inference and its Gaussian twin (a text VAE): docs/recipes.md#amortized-and-vae.
    "amortized": {"langevin": {**_COHERENT["langevin"], "init1": "amortized", "k1": 0,
                               "noise1": 1.0, "read_noise1": 0.0},
                  "encoder": {"free_bits": 0.25},
                  "train": _COHERENT["train"]},
    "vae": {"prior": {"kind": "gaussian"},
            "langevin": {**_COHERENT["langevin"], "init1": "amortized", "k1": 0, "noise1": 1.0,
                         "read_noise1": 0.0, "sample_noise0": None},
            "encoder": {"free_bits": 0.25},
            "train": _ALGORITHM_1},
    # The fair Gaussian baseline: docs/recipes.md#gaussian
    "gaussian": {"prior": {"kind": "gaussian"},
                 "langevin": {**_ENCODER["langevin"], "noise1": 1.0, "sample_noise0": None,
                              "read_noise1": 0.0},
                 "train": _ALGORITHM_1},
}
DEFAULT_RECIPE = "coherent"
# `textebm train ptb` pretrains first: docs/recipes.md#pretrain_steps-and-pretrain_noise-pretrained
CORPUS_RECIPES = {"ptb": "pretrained"}
# What a config.json that lacks a field ran (the code before the field existed): docs/recipes.md#legacy
LEGACY = {"langevin": PAPER["langevin"], "train": _ALGORITHM_1}
# The corpus layer beside DECODER_SIZES; demo's values: docs/recipes.md#the-demo-corpus-corpus_settings
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
    """`textebm train` flags for a study's or bench's setting: a recipe's name runs that recipe
    (`encoder`, `coherent`, ...), and any other name is TOML_DIR/<name>.toml on top of `encoder`.
    `default` is an alias of `encoder`: the rows recorded before the rename say `default`, the
    name the `encoder` recipe had as the default when they were measured. A `:bf16` or `:fp32`
    tail sets the precision (`pretrained:bf16`), so a precision is measured as a lever on one
    setting without a second file that repeats it."""
    name, _, precision = setting.partition(":")
    tail = []
    if precision:
        if precision not in _precisions():
            raise ValueError(f"setting {setting!r}: precision must be one of {', '.join(_precisions())}")
        tail = ["--precision", precision]
    name = "encoder" if name == "default" else name
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
    recipe (`recipe_name`, default default_recipe(corpus)) -> TOML file sections (as `to_toml`
    writes them: the string "none" where a field may be None) -> command-line settings
    ({"train": {"seed": 1}, ...}: only the given ones, each applied as given, None included).
    `langevin.s1` set without `langevin.s1_schedule` means a constant step: it clears the
    recipe's schedule. Validated before it is returned."""
    embed, hidden = DECODER_SIZES.get(corpus, DEFAULT_SIZES)
    cfg = RunConfig()
    cfg.decoder.embed, cfg.decoder.hidden = embed, hidden
    cfg.train.corpus = corpus
    override(cfg, CORPUS_SETTINGS.get(corpus, {}))
    recipe_name = recipe_name or default_recipe(corpus)
    override(cfg, recipe(recipe_name))
    cfg.train.recipe = recipe_name
    override(cfg, typed_sections(toml or {}))
    flags = {s: dict(d) for s, d in (flags or {}).items()}
    if "s1" in flags.get("langevin", {}) and "s1_schedule" not in flags["langevin"]:
        flags["langevin"]["s1_schedule"] = []
    override(cfg, flags)
    return cfg.validate()


def _build(cls, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**values)


def for_corpus(corpus: str) -> RunConfig:
    """The defaults for a corpus under the default recipe (build_config with no other layer)."""
    return build_config(corpus)


# ---- settings by name: SECTION.KEY, parsed by the field's type ----------------------------------
# `sections` below is {section: dataclass}; the run config's by default, and pipeline/evaluate.py
# passes {"eval": EvalConfig} for `textebm evaluate --set`.

def setting_keys(sections: dict | None = None) -> list[str]:
    """Every SECTION.KEY, in declaration order."""
    return [f"{s}.{f.name}" for s, cls in (sections or _COMPONENTS).items() for f in fields(cls)]


def setting_field(key: str, sections: dict | None = None):
    """(dataclass, field) of SECTION.KEY; an unknown one is a ValueError naming the closest keys."""
    sections = sections or _COMPONENTS
    section, _, name = key.partition(".")
    found = {f.name: f for f in fields(sections[section])}.get(name) if section in sections else None
    if found is None:
        keys = setting_keys(sections)
        same_name = [k for k in keys if k.partition(".")[2] == name]   # the key in another section
        close = list(dict.fromkeys(same_name + difflib.get_close_matches(key, keys, n=3)))[:3]
        hint = (f"did you mean {' or '.join(close)}?" if close else
                f"the sections are {', '.join(sections)}; `textebm config` prints every key")
        raise ValueError(f"unknown setting {key!r}; {hint}")
    return sections[section], found


def setting_help(key: str, sections: dict | None = None) -> str:
    """The help declared with the field SECTION.KEY (`setting`)."""
    return setting_field(key, sections)[1].metadata.get("help", "")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


_NONE = ("none", "null")


def _parse(kind, text: str, key: str):
    """TEXT as a value of type KIND: int, float, str, bool, `X | None` (none or empty: None) and
    list[float] (comma-separated, brackets optional; none or empty: [])."""
    raw = str(text).strip()
    args = typing.get_args(kind)
    optional = type(None) in args
    if optional:
        if raw.lower() in _NONE or not raw:
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            body = raw.removeprefix("[").removesuffix("]")
            return [] if body.strip().lower() in (*_NONE, "") else \
                [item(v) for v in body.split(",") if v.strip()]
        if kind is bool:
            return {"true": True, "1": True, "yes": True, "on": True,
                    "false": False, "0": False, "no": False, "off": False}[raw.lower()]
        if kind is str:
            return json.loads(raw) if len(raw) > 1 and raw[0] == raw[-1] == '"' else raw
        return kind(raw)
    except (ValueError, KeyError):
        want = {int: "a whole number", float: "a number", bool: "true or false"}.get(
            kind, "comma-separated numbers")
        raise ValueError(f"{key}={text}: expected {want}{' or none' if optional else ''}") from None


def parse_value(key: str, text: str, sections: dict | None = None):
    """The value of setting SECTION.KEY written as TEXT, parsed by the field's type."""
    cls, f = setting_field(key, sections)
    return _parse(_hints(cls)[f.name], text, key)


def parse_settings(items, sections: dict | None = None) -> dict[str, dict]:
    """["train.ema=0.995", "langevin.s1_schedule=0.5,0.2", "langevin.sample_noise0=none"] ->
    {"train": {"ema": 0.995}, "langevin": {...}}: the `--set SECTION.KEY=VALUE` items of the
    command line and the benchmarks, each value parsed by its field's type (JSON spellings such
    as [0.5, 0.2], null and "text" read the same), in the form override() and build_config take."""
    out: dict[str, dict] = {}
    for item in items:
        key, eq, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (eq and dot and section and name):
            raise ValueError(f"{item!r}: a setting is SECTION.KEY=VALUE, e.g. langevin.k0=60")
        out.setdefault(section, {})[name] = parse_value(f"{section}.{name}", text, sections)
    return out


def typed_sections(values: dict[str, dict], sections: dict | None = None) -> dict[str, dict]:
    """A TOML file's sections with a string where a field is not text parsed by the field's type:
    "none" is None (TOML has no null), "0.5,0.2" a list. Unknown keys fail as in parse_value."""
    out = {}
    for section, part in values.items():
        if not isinstance(part, dict):
            raise ValueError(f"{section} = {part!r}: settings go in [sections], e.g. [langevin]")
        out[section] = {}
        for name, v in part.items():
            cls, f = setting_field(f"{section}.{name}", sections)
            kind = _hints(cls)[f.name]
            out[section][name] = _parse(kind, v, f"{section}.{name}") \
                if isinstance(v, str) and kind is not str else v
    return out


def override(cfg: RunConfig, updates: dict[str, dict]) -> RunConfig:
    """Apply {"train": {"batch_size": 32}, ...} (a recipe, a TOML file, the command line)."""
    for section, values in updates.items():
        if section not in _COMPONENTS:
            raise ValueError(f"unknown config section [{section}]; use one of {', '.join(_COMPONENTS)}")
        part = getattr(cfg, section)
        for k, v in values.items():
            setting_field(f"{section}.{k}")
            setattr(part, k, list(v) if isinstance(v, list) else v)
    return cfg


def _toml_value(v) -> str:
    if v is None:
        return '"none"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def to_toml(cfg: RunConfig, title: str = "") -> str:
    """Every setting of CFG as a TOML file that `--config` (build_config's TOML layer) reads back
    to the same config, each key with its help as a comment; None is written "none". The corpus
    is left out: it is the command's CORPUS, and a file made for one corpus may serve another."""
    lines = [f"# {line}" for line in title.splitlines()]
    for section, cls in _COMPONENTS.items():
        lines += ["", f"[{section}]"]
        for f in fields(cls):
            if f"{section}.{f.name}" != "train.corpus":
                value = _toml_value(getattr(getattr(cfg, section), f.name))
                lines.append(f"{f.name} = {value}  # {f.metadata.get('help', '')}".rstrip(" #"))
    return "\n".join(lines).lstrip("\n") + "\n"


def settings_items(settings: dict[str, dict]) -> list[str]:
    """{"langevin": {"k0": 7}} -> ["langevin.k0=7"]: settings as `--set` takes them."""
    return [f"{s}.{k}={_shown(v)}" for s, part in settings.items() for k, v in part.items()]


# ---- the old `textebm train` flags --------------------------------------------------------------
# Each flag that `textebm train` had before `--set`, and the setting it names: "SECTION.KEY" takes
# the flag's value, "SECTION.KEY=VALUE" is a switch (no value), "--OPTION" an option renamed. They
# keep working for scripts, with a note naming the new spelling (translate_flags); the everyday
# options (--recipe, --prior, --max-steps, --seed, ...) are still options of their own (cli.py).
OLD_FLAGS = {
    "--posterior": "--recipe",
    "--batch-size": "train.batch_size",
    "--k0": "langevin.k0", "--s0": "langevin.s0", "--noise0": "langevin.noise0",
    "--prior-sampler": "langevin.prior_sampler", "--sample-noise0": "langevin.sample_noise0",
    "--k1": "langevin.k1", "--s1": "langevin.s1", "--s1-schedule": "langevin.s1_schedule",
    "--noise1": "langevin.noise1", "--posterior-init": "langevin.init1",
    "--read-schedule": "langevin.read_schedule", "--read-noise1": "langevin.read_noise1",
    "--lr-prior": "train.lr_prior", "--lr-decoder": "train.lr_decoder",
    "--lr-final": "train.lr_final", "--prior-start": "train.prior_start",
    "--pretrain-steps": "train.pretrain_steps", "--grad-penalty": "train.grad_penalty",
    "--decoder-noise": "train.decoder_noise", "--prior-updates": "train.prior_updates",
    "--prior-chains": "train.prior_chains", "--ema": "train.ema", "--clip": "train.clip_decoder",
    "--eval-every": "train.eval_every", "--save-every": "train.save_every",
    "--word-dropout": "decoder.word_dropout",
    "--compile": "train.compile=true", "--no-compile": "train.compile=false",
    "--tokenizer": "train.tokenizer", "--vocab-size": "train.vocab_size",
    "--train-split": "train.train_split", "--max-len": "train.max_len", "--on-long": "train.on_long",
}


@dataclass
class Translated:
    """What translate_flags made of a command's extra words."""
    settings: list[str]        # SECTION.KEY=VALUE items, as `--set` takes them
    options: dict[str, str]    # renamed options and their values ({"--recipe": "paper"})
    words: list[str]           # words that are no flag's value (a misplaced argument)
    note: str | None           # "note: --k0 7 is now --set langevin.k0=7", or None


def translate_flags(args: list[str], table: dict[str, str] | None = None,
                    options: tuple[str, ...] = ()) -> Translated:
    """The old flags in ARGS (`--k0 7`, `--k0=7`, `--compile`) through TABLE (OLD_FLAGS by
    default); a flag neither there nor among OPTIONS (the command's own) is a ValueError naming
    the closest."""
    table = OLD_FLAGS if table is None else table
    out = Translated([], {}, [], None)
    old, new, i = [], [], 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        i += 1
        if not flag.startswith("-"):
            out.words.append(args[i - 1])
            continue
        target = table.get(flag)
        if target is None:
            close = difflib.get_close_matches(flag, [*table, *options], n=3)
            raise ValueError(f"no option {flag}" + (f"; did you mean {' or '.join(close)}?" if close
                                                    else "; --help lists the options"))
        switch = "=" in target and not target.startswith("--")
        if switch:
            if eq:
                raise ValueError(f"{flag} takes no value (it is {target})")
            old.append(flag)
        else:
            if not eq:
                if i >= len(args):
                    raise ValueError(f"{flag} needs a value")
                inline, i = args[i], i + 1
            old.append(f"{flag} {inline}")
        if target.startswith("--"):
            out.options[target] = inline
            new.append(f"{target} {inline}")
        else:
            item = target if switch else f"{target}={inline}"
            out.settings.append(item)
            new.append(f"--set {item}")
    if old:
        out.note = f"note: {' '.join(old)} is now {' '.join(new)}"
    return out


# ---- resuming a run -----------------------------------------------------------------------------
# What a resumed run may change: how long it trains. Every other setting is the run's record
# (config.json), the corpus-reading ones (train_split, max_len, on_long) included: the corpus is
# read again as the run read it, so that the resume continues bit for bit.
RESUME_MAY_CHANGE = ("train.max_steps", "train.time_budget")


def resume_config(saved: RunConfig, max_steps: int | None, time_budget: float | None) -> RunConfig:
    """The config a resumed run continues with: SAVED (its config.json), trained to MAX_STEPS and
    within TIME_BUDGET minutes where they are given (None: the recorded length, the recorded
    budget). A copy; SAVED is not changed."""
    if max_steps is not None and max_steps < 0:
        raise ValueError("max steps must be >= 0")
    if time_budget is not None and time_budget <= 0:
        raise ValueError("time budget must be > 0 minutes")
    cfg = copy.deepcopy(saved)
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    if time_budget is not None:
        cfg.train.time_budget = time_budget
    return cfg


def resume_ignored(saved: RunConfig, settings: dict[str, dict]) -> list[str]:
    """The given SETTINGS ({"langevin": {"k0": 7}, ...}) that a resume of SAVED ignores, as
    "langevin.k0=7 (recorded 3)": those outside RESUME_MAY_CHANGE whose value is not the recorded one."""
    recorded = saved.to_dict()
    return [f"{s}.{k}={_shown(v)} (recorded {_shown(recorded[s][k])})"
            for s, part in settings.items() for k, v in part.items()
            if f"{s}.{k}" not in RESUME_MAY_CHANGE and recorded[s][k] != v]


def _shown(v) -> str:
    """A value as `--set` takes it."""
    if v is None:
        return "none"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "none"
    return str(v).lower() if isinstance(v, bool) else str(v)
