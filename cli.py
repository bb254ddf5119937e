"""textebm command line: the typer app, its options and commands. It parses, calls library
functions and prints; it decides nothing of its own.

Settings are declared once, in textebm/config.py (a run's) and pipeline/eval_config.py
(`evaluate`'s): each field with its help. The command line reaches every one of them as
`--set SECTION.KEY=VALUE` (`textebm config` prints them all), the everyday ones also as options
whose help is the field's; the flags that `train` and `evaluate` had before `--set` still work
through one table each (OLD_FLAGS, EVAL_FLAGS), with a note naming the new spelling. Options
that several commands take are declared once, below.
"""
from __future__ import annotations

import functools
import json
import sys
import tomllib
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from textebm.config import setting_help

# rich_markup_mode=None: plain help, so that [brackets] in help texts stay as written.
PLAIN = dict(no_args_is_help=True, rich_markup_mode=None)
app = typer.Typer(help="Latent-space energy-based prior models for text (Pang et al., NeurIPS 2020).",
                  add_completion=False, pretty_exceptions_enable=False, **PLAIN)
corpus_app = typer.Typer(help="Inspect corpora.", **PLAIN)
lm_app = typer.Typer(help="Language models used as evaluators (n-gram, LSTM).", **PLAIN)
app.add_typer(corpus_app, name="corpus")
app.add_typer(lm_app, name="lm")
err = Console(stderr=True)
out = Console()
# Commands that take the old flags as extra words (translated by textebm.config.translate_flags).
OLD_FLAGS_TOO = {"allow_extra_args": True, "ignore_unknown_options": True}


def setting_option(key: str, flag: str, sections: dict | None = None, default=None):
    """An option for the setting KEY with the field's help (None: only a given value is set)."""
    return typer.Option(default, flag, help=setting_help(key, sections))


# ---- options that several commands share, declared once -------------------------------------
CORPUS = typer.Argument(..., metavar="CORPUS", help="ptb, yahoo, snli, demo, a folder or a file.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
DATA_DIR = typer.Option(None, "--data-dir", help="Folder with ptb/, yahoo/, snli/ (or the corpus "
                        "files). Default: $TEXTEBM_DATA, then ~/.cache/textebm, then download.")
SEED = typer.Option(None, "--seed", help="Random seed (default 0; sample: a fresh one).")
CHECKPOINT = typer.Option(None, "--checkpoint", help="Run folder (or its checkpoint.pt). Default: "
                          "the latest run (runs/latest, $TEXTEBM_RUNS to move runs/).")
JSON = typer.Option(False, "--json", help="JSON on stdout (one object, or one per line).")
OUT = typer.Option(None, "--out", help="Output: train's run folder (default runs/CORPUS/TIMESTAMP), "
                   "sample's and score's file (default stdout), report's page, lm lstm's folder.")
PRECISION = typer.Option(None, "--precision", help="fp32, bf16 or auto (bf16 where it runs fast "
                         "here). Default fp32; sample, evaluate: what the run trained in.")
DECODE = typer.Option("sample", "--decode", help="sample (ancestral) or greedy.")
COMPILE = typer.Option(False, "--compile", help="Run the prior chain's steps compiled "
                       "(torch.compile): the same chain, faster after a first call that compiles.")
SAMPLER = typer.Option(None, "--sampler", help="chain: a short-run prior Langevin chain; mala: "
                       "Metropolis-adjusted Langevin on the prior, which samples p_alpha itself "
                       "(its step size tuned over the first half of the steps); aggregate "
                       "(evaluate only): a full-covariance Gaussian fitted to the posterior codes "
                       "of 5,000 training sentences. Default: the run's prior_sampler.")
LAST_WEIGHTS = typer.Option(False, "--last-weights", help="Read a run trained with a weight "
                            "average (train.ema) with its last weights instead.")
ORDER = typer.Option(5, "--order", help="n-gram order.")
TENSORBOARD = typer.Option(None, "--tensorboard", help="Also write TensorBoard event files to this "
                           "folder (needs the tensorboard package).")
STEPS = typer.Option(None, "--steps", help="Langevin steps. Default: the run's K0 (sample; with "
                     "--trace, the largest traced step if larger) or K1 (reconstruct, "
                     "interpolate).")
NOISE = typer.Option(None, "--noise", help="Prior chain noise of the samples (default: the run's "
                     "sample_noise0; 1: Langevin).")
LM = typer.Option("ngram", "--lm", help="The judge LMs: ngram (modified Kneser-Ney) or lstm; "
                  "evaluate also takes both, as ngram,lstm (--set eval.lm says more).")
RECIPE = typer.Option(None, "--recipe", help="coherent (default), pretrained (ptb's default), "
                      "encoder, paper, sri, steady, gaussian, amortized, vae (docs/recipes.md).")
SET = typer.Option([], "--set", metavar="SECTION.KEY=VALUE", help="Any setting (none: unset; lists "
                   "comma-separated); repeatable. `textebm config` lists them; evaluate: eval.*.")
CONFIG = typer.Option(None, "--config", help="TOML file with [prior] [decoder] [langevin] [encoder] "
                      "[train] sections, as `textebm config` prints them.")
TEXT_FILE = dict(exists=True, dir_okay=False, help="Text, one sentence per line.")
TRAIN_FILE = typer.Option(..., "--train", **TEXT_FILE)
VALID_FILE = typer.Option(..., "--valid", **TEXT_FILE)
EVAL_FILE = typer.Option(..., "--eval", **TEXT_FILE)


def friendly(fn):
    """Turn the errors users can cause into one red line and exit code 2 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from corpora import CorpusError
        from textebm.checkpoint import CheckpointError
        from textebm.train import DivergenceError
        from common.interrupt import raise_on_signals
        raise_on_signals()   # SIGTERM and SIGHUP stop a command as Ctrl-C does
        try:
            return fn(*args, **kwargs)
        except DivergenceError as e:
            err.print(f"[red]diverged:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(3)
        except (CorpusError, CheckpointError, ValueError, FileNotFoundError) as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt as e:
            name, code = getattr(e, "name", "SIGINT"), getattr(e, "exit_code", 130)
            err.print(f"interrupted ({name}); state saved where a run was in progress (train: "
                      f"continue with --resume RUN; evaluate and lm lstm: run the same command "
                      f"again)", highlight=False, soft_wrap=True)
            raise typer.Exit(code)
    return wrapper


def note(text: str) -> None:
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def settings_of(ctx: typer.Context, sets: list[str], named: dict, table: dict | None = None,
                sections: dict | None = None, first: Optional[str] = None) -> tuple[dict, dict, Optional[str]]:
    """The command line's settings, {section: {key: value}}: the named options that were given,
    then the old flags among the extra words (translated through TABLE, with a note), then the
    --set items; a later one wins. Also the renamed options among the old flags, and FIRST, the
    command's argument: where click took an old flag for it (`train --k0 7 demo`), the word that
    no flag takes (None if there is none)."""
    from textebm.config import parse_settings, translate_flags
    own = tuple(o for p in ctx.command.params for o in getattr(p, "opts", ()) if o.startswith("--"))
    args = list(ctx.args)
    if first is not None and first.startswith("-"):
        args, first = [first, *args], None
    old = translate_flags(args, table, own)
    words = old.words
    if first is None and len(words) == 1 and args is not ctx.args:
        first, words = words[0], []
    if words:
        raise ValueError(f"unexpected argument {words[0]!r} (--help lists the options)")
    if old.note:
        note(old.note)
    settings: dict[str, dict] = {}
    for key, value in named.items():
        if value is not None:
            section, _, name = key.partition(".")
            settings.setdefault(section, {})[name] = value
    for section, values in parse_settings([*old.settings, *sets], sections).items():
        settings.setdefault(section, {}).update(values)
    return settings, old.options, first


def _recipe(recipe: Optional[str], renamed: dict) -> Optional[str]:
    posterior = renamed.get("--recipe")   # --posterior, the recipe's old name
    if recipe and posterior and recipe != posterior:
        raise ValueError(f"--recipe {recipe} and --posterior {posterior} (its old name) disagree")
    return recipe or posterior


def _load(name, data_dir, train_split="train", max_len=400, on_long="drop"):
    from corpora.registry import load_corpus
    return load_corpus(name, data_dir=data_dir, max_len=max_len, on_long=on_long,
                       train_split=train_split)


def _toml(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"--config {path}: {e}") from None


def _run_dir(checkpoint: Optional[Path]) -> Path:
    """The run folder a command reads: --checkpoint, or the latest run, named on stderr."""
    from textebm.runs import latest_run
    if checkpoint:
        return Path(checkpoint)
    run = latest_run()
    note(f"run: {run} (the latest; --checkpoint DIR picks another)")
    return run


def _open_run(checkpoint: Optional[Path], device: str, precision: Optional[str] = None,
              compile: bool = False, last_weights: bool = False):
    from textebm.api import load
    from textebm.device import pick_device
    return load(_run_dir(checkpoint), pick_device(device), precision, compile, average=not last_weights)


def _note_unknown(unknown) -> None:
    if unknown:
        words = ", ".join(f"{w} ({c})" if c > 1 else w for w, c in unknown.most_common(10))
        more = ", ..." if len(unknown) > 10 else ""
        note(f"note: {sum(unknown.values())} word(s) not in the vocabulary were read as "
             f"<unk>: {words}{more}")


def _emit(lines: list[str], out_file: Optional[Path]) -> None:
    text = "".join(line + "\n" for line in lines)
    if out_file is None:
        sys.stdout.write(text)
    else:
        Path(out_file).write_text(text, encoding="utf-8")
        note(f"wrote {len(lines)} lines to {out_file}")


# ---- corpora -----------------------------------------------------------------------------------
@corpus_app.command("info")
@friendly
def corpus_info(name: str = CORPUS, data_dir: Optional[Path] = DATA_DIR,
                train_split: str = setting_option("train.train_split", "--train-split", default="train"),
                max_len: int = setting_option("train.max_len", "--max-len", default=400),
                on_long: str = setting_option("train.on_long", "--on-long", default="drop"),
                as_json: bool = JSON,
                tokenizer: str = setting_option("train.tokenizer", "--tokenizer", default="word"),
                vocab_size: Optional[int] = setting_option("train.vocab_size", "--vocab-size")):
    """Sentences, tokens, vocabulary, lengths and OOV rate of each split."""
    import tempfile
    from corpora.stats import corpus_stats
    if tokenizer not in ("word", "spm"):
        raise ValueError(f"--tokenizer must be word or spm, got {tokenizer!r}")
    corpus = _load(name, data_dir, train_split, max_len, on_long)
    tokenize, pieces = None, vocab_size or 8000
    if tokenizer == "spm":
        from corpora.subword import SubwordTokenizer
        with tempfile.TemporaryDirectory() as tmp:
            tokenize = SubwordTokenizer.train(corpus.train, pieces, Path(tmp) / "spm").encode
    stats = corpus_stats(corpus, tokenize)
    if as_json:
        print(json.dumps(stats))
        return
    from rich.table import Table
    unit = f"; {pieces} spm pieces" if tokenizer == "spm" else ""
    t = Table(title=escape(f"{corpus.name}  ({corpus.source}; vocabulary from {corpus.train_split}{unit})"))
    cols = ["sentences", "tokens", "vocab_size", "avg_len", "max_len", "oov_rate"]
    t.add_column("split")
    for c in cols:
        t.add_column(c, justify="right")
    for split, s in stats.items():
        t.add_row(split, *([f"{s[c]:,}" if isinstance(s[c], int) else f"{s[c]:.4g}" for c in cols]
                           if s else ["missing"] + [""] * 5))
    out.print(t)
    skipped = {k: v.as_dict() for k, v in corpus.stats.items()
               if v.empty or v.long_dropped or v.long_cut}
    if skipped:
        out.print(f"skipped lines: {skipped}")


# ---- settings and training ---------------------------------------------------------------------
PRIOR = setting_option("prior.kind", "--prior")
MAX_STEPS = setting_option("train.max_steps", "--max-steps")
TIME_BUDGET = setting_option("train.time_budget", "--time-budget")


def _run_settings(ctx, sets, corpus, prior=None, max_steps=None, time_budget=None, seed=None,
                  precision=None):
    """(settings, recipe's old spelling, corpus) of `train` and `config`."""
    return settings_of(ctx, sets, {"prior.kind": prior, "train.max_steps": max_steps,
                                   "train.time_budget": time_budget, "train.seed": seed,
                                   "train.precision": precision}, first=corpus)


@app.command("config", context_settings=OLD_FLAGS_TOO)
@friendly
def config_cmd(ctx: typer.Context,
               corpus: str = typer.Argument("ptb", help="The corpus (its decoder sizes, demo's "
                                            "short schedule, ptb's default recipe)."),
               recipe: Optional[str] = RECIPE, config: Optional[Path] = CONFIG,
               sets: list[str] = SET):
    """Print the settings `textebm train CORPUS` would run with (every one, with its help) as a
    TOML file that --config reads back to the same settings."""
    from textebm.config import build_config, settings_items, to_toml
    settings, renamed, corpus = _run_settings(ctx, sets, corpus)
    corpus = corpus or "ptb"
    recipe = _recipe(recipe, renamed)
    cfg = build_config(corpus, recipe, _toml(config), settings)
    given = [*(["--recipe", recipe] if recipe else []), *(["--config", str(config)] if config else []),
             *(f"--set {item}" for item in settings_items(settings))]
    sys.stdout.write(to_toml(cfg, f"The settings of: textebm train {' '.join([corpus, *given])}\n"
                                  f"(recipe {cfg.train.recipe}; the file serves as --config FILE, "
                                  f"and \"none\" is an unset value)"))


@app.command(context_settings=OLD_FLAGS_TOO)
@friendly
def train(ctx: typer.Context, corpus: str = CORPUS, recipe: Optional[str] = RECIPE,
          prior: Optional[str] = PRIOR, max_steps: Optional[int] = MAX_STEPS,
          time_budget: Optional[float] = TIME_BUDGET, out_dir: Optional[Path] = OUT,
          resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this "
                                                "folder (with its recorded settings)."),
          seed: Optional[int] = SEED,
          threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)."),
          device: str = DEVICE, precision: Optional[str] = PRECISION,
          config: Optional[Path] = CONFIG, sets: list[str] = SET,
          quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
          data_dir: Optional[Path] = DATA_DIR, tensorboard: Optional[Path] = TENSORBOARD):
    """Learn a latent-EBM prior model with Algorithm 1 (short-run Langevin prior + posterior).
    Settings: defaults < corpus < --recipe < --config < --set and options."""
    import torch
    from common.interrupt import RunLock
    from textebm import distributed
    from textebm.config import build_config, resume_config, resume_ignored
    from textebm.device import pick_device
    from textebm.plots import plot_curves
    from textebm.runs import mark_latest, new_run_dir, settle_failed_run
    from textebm.train import TrainSetup, train as train_model

    settings, renamed, corpus = _run_settings(ctx, sets, corpus, prior, max_steps, time_budget,
                                              seed, precision)
    if corpus is None:
        raise ValueError("train needs a CORPUS: textebm train CORPUS [OPTIONS]")
    recipe = _recipe(recipe, renamed)
    if tensorboard:
        from common.tensorboard import require
        require()  # before a run folder is made
    if resume:
        from textebm.checkpoint import load_run_files
        saved = load_run_files(resume)[0]
        length = settings.get("train", {})
        cfg = resume_config(saved, length.get("max_steps"), length.get("time_budget"))
        ignored = resume_ignored(saved, settings) + ["--config"] * bool(config) + ["--recipe"] * bool(recipe)
        if ignored:
            note(f"note: --resume keeps the run's recorded settings; ignored: {', '.join(ignored)}")
    else:
        cfg = build_config(corpus, recipe, _toml(config), settings)
        if cfg.train.pretrain_steps >= cfg.train.max_steps:
            note(f"note: the first {cfg.train.pretrain_steps} iterations pretrain decoder and "
                 f"encoder (recipe {cfg.train.recipe}); with --max-steps {cfg.train.max_steps} the "
                 f"prior never trains. --set train.pretrain_steps=0 (was --pretrain-steps 0) or "
                 f"--recipe coherent trains it from the start.")
    dev = pick_device(device)
    ranks = distributed.init(dev)   # several processes under torchrun, else one
    run_dir = resume or distributed.broadcast_object(out_dir or new_run_dir(corpus), ranks)
    t = cfg.train
    data = _load(corpus, data_dir, t.train_split, t.max_len, t.on_long)  # as the run reads it
    if threads:
        torch.set_num_threads(threads)

    def on_eval(ev):
        err.print(f"[cyan]step {ev['step']}[/cyan] valid NLL/token at posterior z "
                  f"{ev['val_recon_nll_tok']:.3f}, at random z {ev['val_random_z_nll_tok']:.3f} "
                  f"(latent gap {ev['val_gap']:.3f}; {ev['active_units']} active units, "
                  f"I(x;z) {ev['mutual_info']:.2f} nats of at most log N = "
                  f"{ev.get('mutual_info_max', float('nan')):.2f})")
        if "energy_samples_minus_codes" in ev:
            # The light AIS of validation (500 temperatures) is a loose lower bound on log Z.
            err.print(f"  prior: E at samples {ev['energy_samples_mean']:.1f}, at codes "
                      f"{ev['energy_codes_mean']:.1f}; deepest well {ev['descent_energy_min']:.1f}; "
                      f"log Z >= {ev['log_z_ais']:.1f} (light AIS), plain MC {ev['log_z_plain_mc']:.1f}",
                      highlight=False)
        for s in ev["samples"]:
            note(f"  > {s}")

    # One writer per run folder: a second train on it refuses while this one lives. The folder
    # becomes runs/latest once it holds a checkpoint (at a validation after the first save, or at
    # the end); a start that fails leaves latest where it was and removes the folder it made.
    created = not Path(run_dir).exists()
    lock = RunLock(Path(run_dir), "textebm train", create=not resume).acquire() if ranks.main else None
    if ranks.main:
        err.print(f"run folder: {run_dir}" + (f" ({ranks.world} processes)" if ranks.world > 1 else ""))
    marked = [False]

    def on_eval_and_mark(ev):
        on_eval(ev)
        if not marked[0]:
            marked[0] = mark_latest(run_dir)

    try:
        summary = train_model(cfg, data, TrainSetup(Path(run_dir), dev, progress=not quiet,
                                                    resume=resume is not None, ranks=ranks,
                                                    tensorboard=tensorboard),
                              on_eval=on_eval_and_mark)
    except BaseException as e:
        if lock:
            lock.release()
            lock = None
        if ranks.main and not resume:
            what = settle_failed_run(Path(run_dir), created, e)
            if what != "latest":
                note(f"no checkpoint was written: runs/latest is unchanged (the run folder "
                     f"{'was removed' if what == 'removed' else 'is kept, marked failed'})")
        raise
    finally:
        distributed.close()
        if lock:
            lock.release()
    if ranks.main:
        mark_latest(run_dir)
        plot_curves(Path(run_dir) / "metrics.jsonl", Path(run_dir) / "curves.png")
        out.print(f"done: {summary['step']} steps, {summary['train_seconds']:.0f} s of training, "
                  f"{summary['valid_seconds']:.0f} s of validation ({summary['precision']}, "
                  f"{summary['threads']} threads) -> {run_dir}", soft_wrap=True, highlight=False)


# ---- reading a trained model -------------------------------------------------------------------
@app.command()
@friendly
def sample(checkpoint: Optional[Path] = CHECKPOINT, steps: Optional[int] = STEPS,
           num: int = typer.Option(10, "--num", "-n", help="Number of sentences (chains)."),
           decode: str = DECODE,
           temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature of "
                                             "ancestral decoding."),
           seed: Optional[int] = SEED, out_file: Optional[Path] = OUT, as_json: bool = JSON,
           trace: Optional[str] = typer.Option(None, "--trace", help="Steps such as 0,40,100: decode "
                                               "the same chains at those steps (paper Table 3) and "
                                               "print the energy profile along the chains."),
           plot: Optional[Path] = typer.Option(None, "--plot", help="Save the energy profile "
                                               "(mean ± std of E(z_k) over chains vs step) as PNG."),
           max_len: Optional[int] = typer.Option(None, "--max-tokens", "--max-len", help="Most "
                                                 "tokens decoded per sample (default 100; 300 for "
                                                 "yahoo). (--max-len, its old name, filters corpus "
                                                 "lines in train.)"),
           step_size: Optional[float] = typer.Option(None, "--step-size", help="Prior Langevin "
                                                     "step size s (default: the run's s0)."),
           noise: Optional[float] = NOISE, sampler: Optional[str] = SAMPLER,
           device: str = DEVICE, precision: Optional[str] = PRECISION, compile: bool = COMPILE,
           last_weights: bool = LAST_WEIGHTS):
    """Sentences from the model: z by a prior Langevin chain from N(0,I), then x ~ p(x|z).
    --json: one object per line (sentence, energy E(z) = -f(z), z_norm, and the trace)."""
    from textebm.api import plot_energy_profile, profile_summary

    try:
        trace_at = sorted({int(k) for k in trace.split(",") if k.strip()}) if trace else []
    except ValueError:
        raise ValueError(f"--trace takes comma-separated step numbers such as 0,40,100, "
                         f"got {trace!r}") from None
    tm = _open_run(checkpoint, device, precision, compile, last_weights)
    if steps is None and trace_at:
        steps = max(tm.config.langevin.sampling_steps(), trace_at[-1])
    s = tm.sample_chains(num, steps, step_size, decode, temperature, seed, max_len,
                         trace_at=trace_at,
                         profile=bool(trace_at or plot) and (sampler or tm.config.langevin.prior_sampler) == "chain",
                         noise=noise, sampler=sampler)
    norms = s.z.norm(dim=-1).tolist()
    energies = s.energy.tolist()
    lines = []
    for i, sent in enumerate(s.sentences):
        if as_json:
            obj = {"sentence": sent, "energy": energies[i], "z_norm": norms[i]}
            if trace_at:
                obj["trace"] = [{"step": tp.step, "sentence": tp.sentences[i],
                                 "energy": float(tp.energy[i]),
                                 "z_norm": float(tp.z[i].norm())} for tp in s.trace]
            lines.append(json.dumps(obj))
        elif trace_at:
            lines.append(f"# chain {i + 1}")
            lines += [f"[step {tp.step:>5}] E={float(tp.energy[i]):+.3f}  {tp.sentences[i]}"
                      for tp in s.trace]
        else:
            lines.append(sent)
    _emit(lines, out_file)
    if s.profile is not None:
        rows = profile_summary(s.profile, trace_at)
        err.print(f"energy E(z_k) = -f(z_k) along {num} chains (mean ± std), step size "
                  f"{s.step_size}, seed {s.seed}:")
        for r in rows:
            err.print(f"  step {r['step']:>5}  {r['mean']:+.4f} ± {r['std']:.4f}")
    if plot:
        plot_energy_profile(s.profile, plot, trace_at)
        note(f"energy profile -> {plot}")


@app.command()
@friendly
def reconstruct(input_file: Path = typer.Option(..., "--input", **TEXT_FILE),
                checkpoint: Optional[Path] = CHECKPOINT, steps: Optional[int] = STEPS,
                seed: Optional[int] = SEED, device: str = DEVICE):
    """Infer z for each sentence (posterior chain) and decode it greedily; report token accuracy
    and NLL per token (-log p(x|z) at the inferred z)."""
    from corpora.preprocess import read_lines
    sentences = [ln for ln in read_lines(input_file) if ln.strip()]
    tm = _open_run(checkpoint, device)
    _note_unknown(tm.encode(sentences).unknown)
    r = tm.reconstruct(sentences, steps=steps, seed=seed or 0)
    for ref, hyp, acc in zip(r.references, r.sentences, r.per_sentence_accuracy):
        print(f"> {ref}\n< {hyp}   [{acc:.0%}]")
    print(f"token accuracy {r.token_accuracy:.4f} (position-wise, </s> included) and NLL "
          f"{r.nll_per_token:.4f} nats per token over {r.tokens} tokens of {len(sentences)} "
          f"sentences; {r.n_unk} <unk> from unknown words")


@app.command()
@friendly
def interpolate(a: str = typer.Argument(..., help="First sentence (t = 0)."),
                b: str = typer.Argument(..., help="Second sentence (t = 1)."),
                checkpoint: Optional[Path] = CHECKPOINT,
                points: int = typer.Option(8, "--points", help="Points on the line, endpoints "
                                           "included."),
                steps: Optional[int] = STEPS, seed: Optional[int] = SEED, device: str = DEVICE):
    """Infer z for both sentences and decode greedily along the straight line between them."""
    tm = _open_run(checkpoint, device)
    _note_unknown(tm.encode([a, b]).unknown)
    r = tm.interpolate(a, b, points=points, steps=steps, seed=seed or 0)
    for t, sent in zip(r.t.tolist(), r.sentences):
        print(f"t={t:.2f}  {sent}")


@app.command()
@friendly
def score(input_file: Path = typer.Argument(..., **TEXT_FILE),
          checkpoint: Optional[Path] = CHECKPOINT,
          fast: bool = typer.Option(False, "--fast", help="log p(x, z) at the posterior z (the "
                                    "run's reading chain; no log Z) instead of the "
                                    "importance-weighted log p(x)."),
          samples: int = typer.Option(20, "--samples", help="AIS chains per sentence (a multiple of 4)."),
          temperatures: int = typer.Option(50, "--temperatures", help="AIS temperatures per sentence."),
          logz_temperatures: int = typer.Option(40000, "--logz-temperatures", help="AIS "
                                                "temperatures of log Z."),
          seed: Optional[int] = SEED, out_file: Optional[Path] = OUT, device: str = DEVICE):
    """Score each sentence of FILE with a trained model (the paper's anomaly score, §4.4): one
    JSON line per sentence with log p(x) (or, --fast, log p(x, z) at the posterior z), its
    tokens and unknown words, then one line of what the scores share (log Z, the method)."""
    from corpora.preprocess import read_lines
    from textebm.ais import AISConfig
    from textebm.nll import NLLConfig
    from textebm.score import score_sentences
    seed = seed or 0
    sentences = [ln for ln in read_lines(input_file) if ln.strip()]
    tm = _open_run(checkpoint, device)
    _note_unknown(tm.encode(sentences).unknown)
    cfg = NLLConfig(samples=samples, temperatures=temperatures, seed=seed,
                    ais=AISConfig(temperatures=logz_temperatures, seed=seed))
    rows, shared = score_sentences(tm, sentences, fast, cfg, seed)
    text = "".join(json.dumps(r) + "\n" for r in rows) + json.dumps({"summary": shared}) + "\n"
    if out_file:
        out_file.write_text(text)
        err.print(f"wrote {len(rows)} scores to {out_file}")
    else:
        sys.stdout.write(text)


@app.command()
@friendly
def runs(root: Optional[Path] = typer.Argument(None, help="Folder to search (default: runs/, or "
                                                "$TEXTEBM_RUNS)."),
         as_json: bool = JSON):
    """One line per run folder: corpus, recipe, steps, training and validation seconds, last
    validation, FPPL / RPPL / NLL where evaluated, and status (finished, interrupted, failed,
    training)."""
    from textebm.runs import list_runs, runs_root
    rows = list_runs(root or runs_root())
    if as_json:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        return
    if not rows:
        err.print(f"no runs under {root or runs_root()}")
        return
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"{'run':<32} {'corpus':<8} {'recipe':<22} {'steps':>11} {'train s':>8} {'valid s':>8} "
          f"{'val nll':>8} {'gap':>6} {'FPPL':>8} {'RPPL':>8} {'NLL':>8}  status")
    for r in rows:
        print(f"{r['run'][-32:]:<32} {str(r['corpus'])[:8]:<8} {r['recipe'][:22]:<22} "
              f"{str(r['steps']) + '/' + str(r['max_steps']):>11} {fmt(r['train_seconds'], '.0f'):>8} {fmt(r['valid_seconds'], '.0f'):>8} "
              f"{fmt(r['val_nll_tok'], '.3f'):>8} {fmt(r['val_gap'], '.3f'):>6} {fmt(r['fppl'], '.1f'):>8} "
              f"{fmt(r['rppl'], '.1f'):>8} {fmt(r['nll'], '.2f'):>8}  {r['status']}")


@app.command()
@friendly
def report(run: Optional[Path] = typer.Argument(None, help="Run folder (default: the latest run)."),
           out_file: Optional[Path] = OUT, seed: Optional[int] = SEED, device: str = DEVICE):
    """One self-contained HTML page for a run: settings, training curves, validation samples over
    time, the prior chain and its energy profile (paper Table 3), latent diagnostics,
    interpolations and the Table 2 row beside the paper's. Images inlined; opens offline."""
    from pipeline.report import ReportConfig, build_report
    from common.storage import atomic_write
    run_dir = _run_dir(run)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    model = _open_run(run_dir, device) if (run_dir / "checkpoint.pt").exists() else None
    page = build_report(run_dir, model, ReportConfig(seed=seed or 0))
    dest = out_file or run_dir / "report.html"
    atomic_write(dest, page.encode("utf-8"))
    err.print(f"report -> {dest}")


# ---- evaluation: language models, forward / reverse perplexity, NLL --------------------------
@lm_app.command("ngram")
@friendly
def lm_ngram(train_file: Path = TRAIN_FILE, eval_file: Path = EVAL_FILE, order: int = ORDER,
             arpa: Optional[Path] = typer.Option(None, "--arpa", help="Also write the model as ARPA."),
             as_json: bool = JSON):
    """Train an interpolated modified Kneser-Ney n-gram LM (lmplz-equivalent) and score a file."""
    from lm_eval.ngram import NGramLM
    from lm_eval.perplexity import read_samples
    lm = NGramLM.train(read_samples(train_file), order=order)
    r = lm.score(read_samples(eval_file))
    if arpa:
        lm.to_arpa(arpa)
    res = {"ppl": r.ppl, "tokens": r.tokens, "oov": r.oov, "order": order,
           "fallback_orders": lm.fallback_orders}
    print(json.dumps(res)) if as_json else out.print(
        f"ppl {r.ppl:.2f} over {r.tokens:,} scored tokens ({r.oov:,} scored as <unk>), order {order}")


@lm_app.command("lstm")
@friendly
def lm_lstm(train_file: Path = TRAIN_FILE, valid_file: Path = VALID_FILE, eval_file: Path = EVAL_FILE,
            out_dir: Optional[Path] = OUT,
            max_epochs: int = typer.Option(30, "--max-epochs", help="Upper bound on epochs."),
            size: int = typer.Option(300, "--size", help="Embedding and hidden size."),
            device: str = DEVICE, precision: Optional[str] = PRECISION, as_json: bool = JSON,
            tensorboard: Optional[Path] = TENSORBOARD):
    """Train a word-level LSTM LM (SGD, lr decay on plateau, early stopping) and score a file."""
    from corpora.vocab import Vocab
    from lm_eval.lstm_lm import LSTMLMConfig, evaluate_ppl, train_lstm_lm
    from lm_eval.perplexity import read_samples
    from textebm.device import pick_device
    train_s = read_samples(train_file)
    vocab = Vocab.build(train_s)
    cfg = LSTMLMConfig(embed=size, hidden=size, max_epochs=max_epochs, precision=precision or "fp32")
    dev = pick_device(device)
    on_epoch, tb = None, None
    if tensorboard:
        from common.tensorboard import open_writer, scalars
        tb = open_writer(tensorboard)  # before training: a missing package fails at once

        def log_epoch(h):
            scalars(tb, "lm", h, h["epoch"], ("train_ppl", "valid_ppl", "lr", "tok_s", "seconds"))
        on_epoch = log_epoch
    try:
        model, hist = train_lstm_lm(train_s, read_samples(valid_file), vocab, cfg, dev,
                                    progress=not as_json, ckpt_dir=out_dir, on_epoch=on_epoch)
    finally:
        if tb:
            tb.close()
    r = evaluate_ppl(model, read_samples(eval_file), vocab, dev)
    res = {"ppl": r["ppl"], "tokens": r["tokens"], "oov": r["oov"], "epochs": len(hist),
           "train_seconds": sum(h["seconds"] for h in hist)}
    print(json.dumps(res)) if as_json else out.print(
        f"ppl {r['ppl']:.2f} over {r['tokens']:,} scored tokens ({r['oov']:,} OOV), "
        f"{len(hist)} epochs, {res['train_seconds']:.0f} s")


@app.command()
@friendly
def perplexity(samples: Path = typer.Argument(..., exists=True, dir_okay=False,
                                              help="Generated sentences, one per line."),
               corpus: str = typer.Option(..., "--corpus", help="ptb, yahoo, snli, demo, a folder or a file."),
               lm: str = LM, order: int = ORDER, data_dir: Optional[Path] = DATA_DIR,
               device: str = DEVICE, precision: Optional[str] = PRECISION, as_json: bool = JSON):
    """Forward PPL (samples under a real-text LM) and reverse PPL (test text under a samples LM)."""
    from lm_eval.lstm_lm import LSTMLMConfig
    from lm_eval.perplexity import PPLConfig, perplexities, read_samples
    from textebm.device import pick_device
    ppl_cfg = PPLConfig(lm=lm, order=order, lstm=LSTMLMConfig(precision=precision or "fp32"))
    res = perplexities(read_samples(samples), _load(corpus, data_dir), ppl_cfg,
                       pick_device(device), progress=not as_json)
    if as_json:
        print(json.dumps({k: res[k] for k in ("fppl", "rppl", "real_fppl", "lm", "samples", "tokens",
                                               "oov")} | {"settings": res}))
        return
    setting = f"order {order}" if lm == "ngram" else "LSTM 300/300"
    out.print(f"forward PPL {res['fppl']:.2f} ({res['tokens']['fppl']:,} tokens)   "
              f"reverse PPL {res['rppl']:.2f} ({res['tokens']['rppl']:,} tokens)   "
              f"real-data FPPL {res['real_fppl']:.2f}   [{lm}, {setting}, {res['samples']:,} samples]")


def _eval_option(key: str, flag: str):
    from pipeline.eval_config import EVAL_SETTINGS, EvalConfig
    return setting_option(f"eval.{key}", flag, EVAL_SETTINGS, getattr(EvalConfig, key))


@app.command(context_settings=OLD_FLAGS_TOO)
@friendly
def evaluate(ctx: typer.Context, checkpoint: Optional[Path] = CHECKPOINT,
             num_samples: int = _eval_option("num_samples", "--num-samples"),
             lm: str = LM, order: int = ORDER, decode: str = DECODE,
             nll_sentences: int = _eval_option("nll_sentences", "--nll-sentences"),
             diag_sentences: int = _eval_option("diag_sentences", "--diag-sentences"),
             parts: str = _eval_option("parts", "--parts"),
             noise: Optional[float] = NOISE, sampler: Optional[str] = SAMPLER,
             seed: Optional[int] = SEED, data_dir: Optional[Path] = DATA_DIR, device: str = DEVICE,
             precision: Optional[str] = PRECISION, compile: bool = COMPILE, as_json: bool = JSON,
             last_weights: bool = LAST_WEIGHTS, sets: list[str] = SET):
    """Sample from a trained model, then FPPL, RPPL, importance-weighted NLL (paper Table 2) and
    the latent diagnostics (gap, active units, I(x;z); on demo the grammar's own checks).
    eval.json is written after each part; an interrupted NLL resumes where it stopped. The
    rarer settings (AIS temperatures, importance samples, LSTM judge epochs) are --set eval.*."""
    from rich.progress import Progress
    from pipeline.eval_config import EVAL_FLAGS, EVAL_SETTINGS, EvalConfig
    from pipeline.evaluate import evaluate_run
    named = {"num_samples": num_samples, "lm": lm, "order": order, "decode": decode,
             "nll_sentences": nll_sentences, "diag_sentences": diag_sentences, "parts": parts,
             "noise": noise, "sampler": sampler, "seed": seed, "precision": precision}
    settings, _, _ = settings_of(ctx, sets, {f"eval.{k}": v for k, v in named.items()},
                                 EVAL_FLAGS, EVAL_SETTINGS)
    cfg = EvalConfig(**settings.get("eval", {}))
    cfg.check()  # a bad --lm, --parts or --nll-samples fails here, before anything is loaded
    run_dir = _run_dir(checkpoint)
    tm = _open_run(run_dir, device, precision, compile, last_weights)
    t = tm.config.train
    corpus = _load(t.corpus, data_dir, t.train_split, t.max_len, t.on_long)
    with Progress(disable=as_json, console=err) as bar:
        def progress(name, total):
            task = bar.add_task(name, total=total)
            return lambda n: bar.advance(task, n)
        res = evaluate_run(tm, corpus, run_dir, cfg, progress=None if as_json else progress,
                           log=lambda msg: err.print(msg))
    if as_json:
        print(json.dumps(res))
    else:
        # The file as it is: rich would wrap it at 80 columns when stdout is a pipe or a file.
        if (run_dir / "eval.md").exists():
            sys.stdout.write((run_dir / "eval.md").read_text())
            sys.stdout.flush()
        if res.get("nll") and "fppl" not in res:
            r = res["nll"]
            out.print(f"NLL {r['nll']:.2f} ± {r['nll_se']:.2f} nats/sentence "
                      f"({r['of_test']} test sentences); log Z {r['log_z']:.2f} "
                      f"(AIS spread {r['log_z_estimate'].get('spread', 0):.2f}); importance ESS "
                      f"median {r['ess']['median']:.1f} of {r['ess']['of']}; floor violations "
                      f"{r['floor']['violations']} of {r['floor']['checked']}", highlight=False,
                      soft_wrap=True)
        if res.get("latent"):
            out.print("latent: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in res["latent"].items()), highlight=False,
                      soft_wrap=True, markup=False)
        out.print(f"wrote {run_dir / 'eval.json'}, eval.md and samples.txt", soft_wrap=True,
                  highlight=False)


if __name__ == "__main__":
    app()
