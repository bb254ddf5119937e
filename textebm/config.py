"""Dataclass configs, one per component, with the paper's defaults (PROTOCOL.md sections 1-3).

Values the paper publishes: z in R^32, EBM 32-200-200-1 LeakyReLU(0.2) (Table 6), decoder sizes
(Table 7), K0=60 s0=0.4 K1=20 s1=0.1 (Table 5), Adam, ~40,000 updates (B.1). Values the paper
does not publish (learning rates, batch size, clipping, how z enters the LSTM) are project
choices, documented here and recorded in every run's config.json.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass

# Paper Table 7: (embedding, hidden) of the one-layer LSTM decoder per corpus. `demo` and user
# corpora are ours: small enough to train on a laptop CPU in minutes.
DECODER_SIZES = {"ptb": (128, 512), "snli": (256, 256), "yahoo": (512, 1024), "demo": (64, 128)}
DEFAULT_SIZES = (128, 512)


@dataclass
class PriorConfig:
    """f_alpha: MLP latent_dim -> hidden -> hidden -> 1; energy E(z) = -f_alpha(z)."""
    latent_dim: int = 32
    hidden: int = 200
    leak: float = 0.2
    kind: str = "ebm"  # "ebm" (learned exponential tilt of N(0,I)) or "gaussian" (fixed N(0,I))


@dataclass
class DecoderConfig:
    """p_beta(x|z): one-layer LSTM; z is concatenated to every input embedding and h0 = Linear(z)."""
    vocab_size: int = 10000
    embed: int = 128
    hidden: int = 512
    latent_dim: int = 32
    dropout: float = 0.5
    init_range: float = 0.1


@dataclass
class LangevinConfig:
    """Short-run chains from N(0,I): z <- z - (s^2/2) dU/dz + s*eps (paper eq. 9 with s' = s^2/2)."""
    k0: int = 60
    s0: float = 0.4
    k1: int = 20
    s1: float = 0.1


@dataclass
class TrainConfig:
    """Algorithm 1. Learning rates, batch size and clipping are ours (not in the paper)."""
    corpus: str = "ptb"
    max_steps: int = 40000
    batch_size: int = 64
    lr_prior: float = 1e-4
    lr_decoder: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    clip_decoder: float = 5.0
    clip_prior: float = 1.0
    seed: int = 0
    eval_every: int = 1000
    save_every: int = 1000
    eval_sentences: int = 500
    samples_shown: int = 3
    train_split: str = "train"
    max_len: int = 400
    tokenizer: str = "word"
    vocab_size: int | None = None
    min_count: int = 1


@dataclass
class RunConfig:
    prior: PriorConfig = field(default_factory=PriorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    langevin: LangevinConfig = field(default_factory=LangevinConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "RunConfig":
        """Catch impossible settings before a run folder is written (ValueError, one line)."""
        p, d, lc, t = self.prior, self.decoder, self.langevin, self.train
        if p.kind not in ("ebm", "gaussian"):
            raise ValueError(f"prior must be 'ebm' or 'gaussian', got {p.kind!r}")
        if d.latent_dim != p.latent_dim:
            raise ValueError("decoder.latent_dim must equal prior.latent_dim")
        if min(lc.k0, lc.k1) < 0 or min(lc.s0, lc.s1) <= 0:
            raise ValueError("Langevin steps must be >= 0 and step sizes > 0")
        if t.batch_size < 1 or t.max_steps < 0:
            raise ValueError("batch size must be >= 1 and max steps >= 0")
        if t.tokenizer not in ("word", "spm"):
            raise ValueError(f"tokenizer must be 'word' or 'spm', got {t.tokenizer!r}")
        if min(t.lr_prior, t.lr_decoder) < 0 or not 0 <= d.dropout < 1:
            raise ValueError("learning rates must be >= 0 and dropout in [0, 1)")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(**{f.name: _build(_COMPONENTS[f.name], d.get(f.name, {})) for f in fields(cls)})


_COMPONENTS = {"prior": PriorConfig, "decoder": DecoderConfig, "langevin": LangevinConfig,
               "train": TrainConfig}


def _build(cls, values: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**values)


def for_corpus(corpus: str) -> RunConfig:
    """The defaults for a corpus: paper Table 7 decoder sizes where published."""
    embed, hidden = DECODER_SIZES.get(corpus, DEFAULT_SIZES)
    cfg = RunConfig()
    cfg.decoder.embed, cfg.decoder.hidden = embed, hidden
    cfg.train.corpus = corpus
    if corpus == "demo":
        # Small and quick: a few minutes on 2 CPU cores.
        cfg.train.max_steps, cfg.train.batch_size = 1500, 64
        cfg.train.eval_every = cfg.train.save_every = 250
        cfg.decoder.dropout = 0.2
    return cfg


def override(cfg: RunConfig, updates: dict[str, dict]) -> RunConfig:
    """Apply {"train": {"batch_size": 32}, ...} (from a TOML file or the command line)."""
    for section, values in updates.items():
        if section not in _COMPONENTS:
            raise ValueError(f"unknown config section [{section}]; use one of {list(_COMPONENTS)}")
        part = getattr(cfg, section)
        for k, v in values.items():
            if not hasattr(part, k):
                raise ValueError(f"unknown key {section}.{k}")
            setattr(part, k, v)
    return cfg
