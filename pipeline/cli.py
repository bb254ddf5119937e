"""textebm command line: parses options, calls library functions, prints. No logic of its own."""
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

app = typer.Typer(help="Latent-space energy-based prior models for text (Pang et al., NeurIPS 2020).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
corpus_app = typer.Typer(help="Inspect corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
err = Console(stderr=True)
out = Console()

DATA_DIR = typer.Option(None, "--data-dir", help="Folder with ptb/, yahoo/, snli/ (or the corpus "
                        "files themselves). Default: $TEXTEBM_DATA, then ~/.cache/textebm, then download.")
TRAIN_SPLIT = typer.Option("train", "--train-split", help="Split to train on and build the vocabulary "
                           "from (e.g. valid where train is missing); recorded in the run.")
MAX_LEN = typer.Option(400, "--max-len", help="Longest sentence kept, in tokens.")
ON_LONG = typer.Option("drop", "--on-long", help="What to do with longer lines: drop or cut.")
TENSORBOARD = typer.Option(None, "--tensorboard", help="Also write TensorBoard event files to this "
                           "folder (needs the tensorboard package).")


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


def _load(name, data_dir, train_split="train", max_len=400, on_long="drop"):
    from corpora.registry import load_corpus
    return load_corpus(name, data_dir=data_dir, max_len=max_len, on_long=on_long,
                       train_split=train_split)


@corpus_app.command("info")
@friendly
def corpus_info(name: str = typer.Argument(..., help="ptb, yahoo, snli, demo, a folder or a file."),
                data_dir: Optional[Path] = DATA_DIR, train_split: str = TRAIN_SPLIT,
                max_len: int = MAX_LEN, on_long: str = ON_LONG,
                as_json: bool = typer.Option(False, "--json", help="One JSON object."),
                tokenizer: str = typer.Option("word", "--tokenizer", help="word, or spm: count "
                                              "sentencepiece pieces learned from the training split."),
                vocab_size: int = typer.Option(8000, "--vocab-size", help="Pieces of the spm model "
                                               "(--tokenizer spm).")):
    """Sentences, tokens, vocabulary, lengths and OOV rate of each split."""
    import tempfile
    from corpora.stats import corpus_stats
    if tokenizer not in ("word", "spm"):
        raise ValueError(f"--tokenizer must be word or spm, got {tokenizer!r}")
    corpus = _load(name, data_dir, train_split, max_len, on_long)
    tokenize = None
    if tokenizer == "spm":
        from corpora.subword import SubwordTokenizer
        with tempfile.TemporaryDirectory() as tmp:
            tokenize = SubwordTokenizer.train(corpus.train, vocab_size, Path(tmp) / "spm").encode
    stats = corpus_stats(corpus, tokenize)
    if as_json:
        print(json.dumps(stats))
        return
    from rich.table import Table
    unit = f"; {vocab_size} spm pieces" if tokenizer == "spm" else ""
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


def _toml(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"--config {path}: {e}") from None


@app.command()
@friendly
def train(corpus: str = typer.Argument(..., help="ptb, yahoo, snli, demo, a folder or a file."),
          out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/CORPUS/TIMESTAMP)."),
          config: Optional[Path] = typer.Option(None, "--config", help="TOML file with [prior] [decoder] "
                                                "[langevin] [train] sections; command-line options win."),
          resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder."),
          max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Training iterations (paper: ~40,000)."),
          time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop after this many "
                                                      "minutes of training, counted over resumes "
                                                      "(or at --max-steps, whichever comes first)."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Sentences per mini-batch."),
          k0: Optional[int] = typer.Option(None, "--k0", help="Prior Langevin steps (default 200; paper 60)."),
          s0: Optional[float] = typer.Option(None, "--s0", help="Prior Langevin step size s (paper 0.4)."),
          k1: Optional[int] = typer.Option(None, "--k1", help="Posterior Langevin steps (default 10; paper 20)."),
          s1: Optional[float] = typer.Option(None, "--s1", help="A constant posterior Langevin step "
                                             "size s (paper 0.1); replaces the recipe's step-size "
                                             "schedule unless --s1-schedule is given too."),
          recipe: Optional[str] = typer.Option(None, "--recipe", help="Training recipe: coherent "
                                               "(the default: encoder with a bounded energy slope "
                                               "and posterior noise 0.8), pretrained (the default "
                                               "for ptb: coherent after 3,000 autoencoder "
                                               "iterations, decoder noise 0.5), encoder (posterior chain "
                                               "from an amortized guess, noise 0.2), paper "
                                               "(Table 5: K1=20, s1=0.1 from N(0,I), K0=60), sri, "
                                               "steady (late EBM, 2 updates/iteration, weight average), "
                                               "gaussian (fixed N(0,I) prior, noise-1 posterior: "
                                               "the fair baseline); --config and the options "
                                               "below override it."),
          posterior: Optional[str] = typer.Option(None, "--posterior", hidden=True,
                                                  help="Old name of --recipe."),
          s1_schedule: Optional[str] = typer.Option(None, "--s1-schedule", help="Posterior step sizes "
                                                    "per step, e.g. 0.8,0.5,0.2,0.1 (the last repeats); "
                                                    "'none' for a constant --s1."),
          noise0: Optional[float] = typer.Option(None, "--noise0", help="Prior chain noise scale in "
                                                 "training (1: Langevin)."),
          prior_sampler: Optional[str] = typer.Option(None, "--prior-sampler", help="The prior "
                                                      "chain's rule in training and for samples: "
                                                      "chain (short-run Langevin) or mala "
                                                      "(Metropolis-adjusted, samples p_alpha)."),
          sample_noise0: Optional[float] = typer.Option(None, "--sample-noise0", help="Prior chain "
                                                        "noise scale when drawing samples (sample, "
                                                        "evaluate; default 0.9, 'paper' preset 1)."),
          noise1: Optional[float] = typer.Option(None, "--noise1", help="Posterior chain noise scale "
                                                 "(1: Langevin; <1 a colder posterior; 0 gradient descent)."),
          read_schedule: Optional[str] = typer.Option(None, "--read-schedule", help="Step sizes of the "
                                                      "posterior chain that reads the trained model "
                                                      "(infer, reconstruct, interpolate), e.g. "
                                                      "0.2,0.2,0.1; 'none': the training chain's."),
          read_noise1: Optional[float] = typer.Option(None, "--read-noise1", help="Noise scale of that "
                                                      "reading chain (default 0 with the default "
                                                      "preset; 'paper' reads with its training chain)."),
          posterior_init: Optional[str] = typer.Option(None, "--posterior-init", help="Where the posterior "
                                                       "chain starts: noise (N(0,I)), persistent (the "
                                                       "sentence's last z+) or encoder (amortized guess)."),
          prior: Optional[str] = typer.Option(None, "--prior", help="ebm (learned) or gaussian (fixed N(0,I) baseline)."),
          lr_prior: Optional[float] = typer.Option(None, "--lr-prior", help="Adam learning rate of the EBM."),
          lr_decoder: Optional[float] = typer.Option(None, "--lr-decoder", help="Adam learning rate of the decoder."),
          lr_final: Optional[float] = typer.Option(None, "--lr-final", help="Every learning rate "
                                                 "falls linearly to this multiple of itself at "
                                                 "--max-steps (1: constant)."),
          prior_start: Optional[int] = typer.Option(None, "--prior-start", help="Iterations before "
                                                    "the EBM starts learning (held at its init, no "
                                                    "prior chain, until then; 0: from the start)."),
          pretrain_steps: Optional[int] = typer.Option(None, "--pretrain-steps", help="Iterations "
                                                       "at the start that train decoder and encoder "
                                                       "as an autoencoder (z = g(x), no chains; "
                                                       "several times faster per iteration); 0: none "
                                                       "(the default; ptb's pretrained recipe: 3000)."),
          grad_penalty: Optional[float] = typer.Option(None, "--grad-penalty", help="gamma of the "
                                                       "slope penalty gamma*(|dE/dz+|^2 + |dE/dz-|^2) "
                                                       "on the EBM (default 1; 0: none, the encoder "
                                                       "recipe)."),
          decoder_noise: Optional[float] = typer.Option(None, "--decoder-noise", help="sigma: the "
                                                        "decoder learns at z+ + sigma*N(0,I) "
                                                        "(default 0; ptb's pretrained recipe: 0.5)."),
          prior_updates: Optional[int] = typer.Option(None, "--prior-updates", help="EBM updates per "
                                                      "iteration, each against a fresh prior chain "
                                                      "(default 1, as in Algorithm 1)."),
          prior_chains: Optional[int] = typer.Option(None, "--prior-chains", help="Prior chains "
                                                     "(z-) per EBM update (0: one per sentence of "
                                                     "the batch, as in Algorithm 1)."),
          ema: Optional[float] = typer.Option(None, "--ema", help="Decay of a moving average of the "
                                              "weights, which sample and evaluate then read "
                                              "(e.g. 0.995; 0: none, the last weights)."),
          clip: Optional[float] = typer.Option(None, "--clip", help="Gradient-norm clip of the decoder."),
          seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (data order, chains, init)."),
          eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Validate every N steps (0: never)."),
          save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps."),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0: torch's default)."),
          precision: Optional[str] = typer.Option(None, "--precision", help="fp32, bf16 (bf16 compute, "
                                                  "fp32 weights, normalisers and chains) or auto "
                                                  "(bf16 where this machine runs it fast); the pick "
                                                  "is recorded in config.json."),
          word_dropout: Optional[float] = typer.Option(None, "--word-dropout", help="Share of the "
                                                       "decoder's input words read as <unk> in "
                                                       "training (0: none)."),
          compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Run the prior "
                                                 "chain's steps compiled (torch.compile; the same "
                                                 "chain, faster; eager if compiling fails)."),
          tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="word, or spm (sentencepiece "
                                                  "pieces learned on the training split)."),
          vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help="spm: number of pieces "
                                                   "(default 8000); word: largest vocabulary kept."),
          data_dir: Optional[Path] = DATA_DIR, train_split: str = TRAIN_SPLIT,
          max_len: int = MAX_LEN, on_long: str = ON_LONG,
          tensorboard: Optional[Path] = TENSORBOARD,
          quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")):
    """Learn a latent-EBM prior model with Algorithm 1 (short-run Langevin prior + posterior)."""
    import torch
    from textebm.device import pick_device
    from textebm.plots import plot_curves
    from common.interrupt import RunLock
    from textebm.runs import mark_latest, new_run_dir
    from textebm import distributed
    from textebm.train import TrainSetup, train as train_model

    from textebm.config import build_config, parse_schedule
    if tensorboard:
        from common.tensorboard import require
        require()  # before a run folder is made
    if recipe and posterior and recipe != posterior:
        raise ValueError(f"--recipe {recipe} and --posterior {posterior} (its old name) disagree")
    recipe = recipe or posterior
    cli = {"train": {"max_steps": max_steps, "time_budget": time_budget, "batch_size": batch_size, "lr_prior": lr_prior,
                     "lr_decoder": lr_decoder, "prior_start": prior_start, "pretrain_steps": pretrain_steps,
                     "grad_penalty": grad_penalty, "decoder_noise": decoder_noise, "lr_final": lr_final, "prior_updates": prior_updates,
                     "prior_chains": prior_chains, "ema": ema, "clip_decoder": clip, "seed": seed,
                     "eval_every": eval_every, "save_every": save_every,
                     "tokenizer": tokenizer, "vocab_size": vocab_size, "precision": precision,
                     "compile": compile, "train_split": train_split, "max_len": max_len,
                     "on_long": on_long},
           "langevin": {"k0": k0, "s0": s0, "k1": k1, "s1": s1, "noise0": noise0, "noise1": noise1,
                        "prior_sampler": prior_sampler,
                        "sample_noise0": sample_noise0, "init1": posterior_init,
                        "s1_schedule": None if s1_schedule is None else parse_schedule(s1_schedule),
                        "read_schedule": None if read_schedule is None else parse_schedule(read_schedule),
                        "read_noise1": read_noise1},
           "prior": {"kind": prior}, "decoder": {"word_dropout": word_dropout}}
    cfg = build_config(corpus, recipe, _toml(config), cli)
    if resume:
        run_dir = resume
        if max_steps is None:  # a resume without --max-steps trains to the run's recorded length
            from textebm.checkpoint import load_run_files
            cfg.train.max_steps = load_run_files(resume)[0].train.max_steps
        # A resumed run keeps its recorded settings; only --max-steps / --time-budget may extend it.
        ignored = [f"{sec}.{k}" for sec, d in cli.items() for k, v in d.items()
                   if v is not None and k not in ("max_steps", "time_budget", "train_split",
                                                  "max_len", "on_long")]
        ignored += ["--config"] * bool(config) + ["--recipe"] * bool(recipe)
        if ignored:
            err.print(f"note: --resume keeps the run's recorded settings; ignored: "
                      f"{', '.join(ignored)}", markup=False, highlight=False)
    if cfg.train.pretrain_steps >= cfg.train.max_steps and not resume:
        err.print(f"note: the first {cfg.train.pretrain_steps} iterations pretrain decoder and "
                  f"encoder (recipe {cfg.train.recipe}); with --max-steps {cfg.train.max_steps} the "
                  f"prior never trains. --pretrain-steps 0 (or --recipe coherent) trains it from "
                  f"the start.", markup=False, highlight=False)
    dev = pick_device(device)
    ranks = distributed.init(dev)   # several processes under torchrun, else one
    if not resume:
        run_dir = distributed.broadcast_object(out_dir or new_run_dir(corpus), ranks)
    data = _load(corpus, data_dir, train_split, max_len, on_long)
    if threads:
        torch.set_num_threads(threads)

    def on_eval(ev):
        err.print(f"[cyan]step {ev['step']}[/cyan] valid NLL/token at posterior z "
                  f"{ev['val_recon_nll_tok']:.3f}, at random z {ev['val_random_z_nll_tok']:.3f} "
                  f"(latent gap {ev['val_gap']:.3f}; {ev['active_units']} active units, "
                  f"I(x;z) {ev['mutual_info']:.2f} nats)")
        if "energy_samples_minus_codes" in ev:
            # The light AIS of validation (500 temperatures) is a loose lower bound on log Z.
            err.print(f"  prior: E at samples {ev['energy_samples_mean']:.1f}, at codes "
                      f"{ev['energy_codes_mean']:.1f}; deepest well {ev['descent_energy_min']:.1f}; "
                      f"log Z >= {ev['log_z_ais']:.1f} (light AIS), plain MC {ev['log_z_plain_mc']:.1f}",
                      highlight=False)
        for s in ev["samples"]:
            err.print(f"  > {s}", markup=False, highlight=False)

    # One writer per run folder: a second train on it refuses while this one lives.
    lock = RunLock(Path(run_dir), "textebm train", create=not resume).acquire() if ranks.main else None
    if ranks.main:
        mark_latest(run_dir) if not resume else None
        err.print(f"run folder: {run_dir}" + (f" ({ranks.world} processes)" if ranks.world > 1 else ""))
    try:
        summary = train_model(cfg, data, TrainSetup(Path(run_dir), dev, progress=not quiet,
                                                    resume=resume is not None, ranks=ranks,
                                                    tensorboard=tensorboard),
                              on_eval=on_eval)
    finally:
        distributed.close()
        if lock:
            lock.release()
    if ranks.main:
        mark_latest(run_dir)
        plot_curves(Path(run_dir) / "metrics.jsonl", Path(run_dir) / "curves.png")
        out.print(f"done: {summary['step']} steps, {summary['train_seconds']:.0f} s of training "
                  f"({summary['precision']}, {summary['threads']} threads) -> {run_dir}")


CHECKPOINT = typer.Option(None, "--checkpoint", help="Run folder (or its checkpoint.pt). Default: "
                          "the latest run (runs/latest, $TEXTEBM_RUNS to move runs/).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
PRECISION = typer.Option("fp32", "--precision", help="fp32, bf16 or auto (bf16 where this machine "
                         "runs it fast).")
RUN_PRECISION = typer.Option(None, "--precision", help="fp32, bf16 or auto (bf16 where this "
                             "machine runs it fast). Default: what the run trained in.")
COMPILE = typer.Option(False, "--compile", help="Run the prior chain's steps compiled "
                       "(torch.compile): the same chain, faster after a first call that compiles.")
SAMPLER = typer.Option(None, "--sampler", help="chain: a short-run prior Langevin chain; mala: "
                       "Metropolis-adjusted Langevin on the prior, which samples p_alpha itself "
                       "(its step size tuned over the first half of the steps); aggregate "
                       "(evaluate only): a full-covariance Gaussian fitted to the posterior codes "
                       "of 5,000 training sentences. Default: the run's prior_sampler.")
LAST_WEIGHTS = typer.Option(False, "--last-weights", help="Read a run trained with --ema with its "
                            "last weights instead of their moving average.")


def _open_run(checkpoint: Optional[Path], device: str, precision: Optional[str] = None,
              compile: bool = False, last_weights: bool = False):
    from textebm.api import load
    from textebm.device import pick_device
    from textebm.runs import resolve
    return load(resolve(checkpoint), pick_device(device), precision, compile, average=not last_weights)


def _note_unknown(unknown) -> None:
    if unknown:
        words = ", ".join(f"{w} ({c})" if c > 1 else w for w, c in unknown.most_common(10))
        more = ", ..." if len(unknown) > 10 else ""
        err.print(f"note: {sum(unknown.values())} word(s) not in the vocabulary were read as "
                  f"<unk>: {words}{more}", markup=False, highlight=False, soft_wrap=True)


def _emit(lines: list[str], out_file: Optional[Path]) -> None:
    text = "".join(line + "\n" for line in lines)
    if out_file is None:
        sys.stdout.write(text)
    else:
        Path(out_file).write_text(text, encoding="utf-8")
        err.print(f"wrote {len(lines)} lines to {out_file}", markup=False, highlight=False)


@app.command()
@friendly
def sample(checkpoint: Optional[Path] = CHECKPOINT,
           steps: Optional[int] = typer.Option(None, "--steps", help="Prior Langevin steps K from "
                                               "N(0,I) (default: the run's K0; with --trace, the "
                                               "largest traced step if that is larger)."),
           num: int = typer.Option(10, "--num", "-n", help="Number of sentences (chains)."),
           decode: str = typer.Option("sample", "--decode", help="sample (ancestral) or greedy."),
           temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature of "
                                             "ancestral decoding."),
           seed: Optional[int] = typer.Option(None, "--seed", help="Random seed: same seed, same "
                                              "sentences (default: a fresh one)."),
           out_file: Optional[Path] = typer.Option(None, "--out", help="Write the output to FILE "
                                                   "instead of stdout."),
           as_json: bool = typer.Option(False, "--json", help="One JSON object per line: sentence, "
                                        "energy E(z) = -f(z), z_norm (and the trace)."),
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
           noise: Optional[float] = typer.Option(None, "--noise", help="Prior chain noise scale "
                                                 "(default: the run's sample_noise0; 1: Langevin)."),
           sampler: Optional[str] = SAMPLER,
           device: str = DEVICE, precision: Optional[str] = RUN_PRECISION, compile: bool = COMPILE,
           last_weights: bool = LAST_WEIGHTS):
    """Sentences from the model: z by a prior Langevin chain from N(0,I), then x ~ p(x|z)."""
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
        err.print(f"energy profile -> {plot}", markup=False, highlight=False)


@app.command()
@friendly
def reconstruct(input_file: Path = typer.Option(..., "--input", exists=True, dir_okay=False,
                                                help="Text file, one sentence per line."),
                checkpoint: Optional[Path] = CHECKPOINT,
                steps: Optional[int] = typer.Option(None, "--steps", help="Posterior Langevin "
                                                    "steps (default: the run's K1)."),
                seed: int = typer.Option(0, "--seed", help="Seed of the posterior chains."),
                device: str = DEVICE):
    """Infer z for each sentence (posterior chain) and decode it greedily; report token accuracy
    and NLL per token (-log p(x|z) at the inferred z)."""
    from corpora.preprocess import read_lines
    sentences = [ln for ln in read_lines(input_file) if ln.strip()]
    tm = _open_run(checkpoint, device)
    _note_unknown(tm.encode(sentences).unknown)
    r = tm.reconstruct(sentences, steps=steps, seed=seed)
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
                steps: Optional[int] = typer.Option(None, "--steps", help="Posterior Langevin "
                                                    "steps (default: the run's K1)."),
                seed: int = typer.Option(0, "--seed", help="Seed of the posterior chains."),
                device: str = DEVICE):
    """Infer z for both sentences and decode greedily along the straight line between them."""
    tm = _open_run(checkpoint, device)
    _note_unknown(tm.encode([a, b]).unknown)
    r = tm.interpolate(a, b, points=points, steps=steps, seed=seed)
    for t, sent in zip(r.t.tolist(), r.sentences):
        print(f"t={t:.2f}  {sent}")

@app.command()
@friendly
def score(input_file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                            help="Text file, one sentence per line."),
          checkpoint: Optional[Path] = CHECKPOINT,
          fast: bool = typer.Option(False, "--fast", help="log p(x, z) at the posterior z (the "
                                    "run's reading chain; no log Z) instead of the "
                                    "importance-weighted log p(x)."),
          samples: int = typer.Option(20, "--samples", help="AIS chains per sentence (a multiple of 4)."),
          temperatures: int = typer.Option(50, "--temperatures", help="AIS temperatures per sentence."),
          logz_temperatures: int = typer.Option(40000, "--logz-temperatures", help="AIS "
                                                "temperatures of log Z."),
          seed: int = typer.Option(0, "--seed"),
          out_file: Optional[Path] = typer.Option(None, "--out", help="Write the JSON lines to FILE."),
          device: str = DEVICE):
    """Score each sentence of FILE with a trained model (the paper's anomaly score, §4.4): one
    JSON line per sentence with log p(x) (or, --fast, log p(x, z) at the posterior z), its
    tokens and unknown words, then one line of what the scores share (log Z, the method)."""
    from corpora.preprocess import read_lines
    from textebm.ais import AISConfig
    from textebm.nll import NLLConfig
    from textebm.score import score_sentences
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
         as_json: bool = typer.Option(False, "--json", help="One JSON object per run.")):
    """One line per run folder: corpus, recipe, steps, training time, last validation, FPPL /
    RPPL / NLL where evaluated, and status (finished, interrupted, training)."""
    from textebm.runs import list_runs, runs_root
    rows = list_runs(root or runs_root())
    if as_json:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        return
    if not rows:
        err.print(f"no runs under {root or runs_root()}")
        return
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"{'run':<32} {'corpus':<8} {'recipe':<22} {'steps':>11} {'train s':>8} "
          f"{'val nll':>8} {'gap':>6} {'FPPL':>8} {'RPPL':>8} {'NLL':>8}  status")
    for r in rows:
        print(f"{r['run'][-32:]:<32} {str(r['corpus'])[:8]:<8} {r['recipe'][:22]:<22} "
              f"{str(r['steps']) + '/' + str(r['max_steps']):>11} {fmt(r['train_seconds'], '.0f'):>8} "
              f"{fmt(r['val_nll_tok'], '.3f'):>8} {fmt(r['val_gap'], '.3f'):>6} {fmt(r['fppl'], '.1f'):>8} "
              f"{fmt(r['rppl'], '.1f'):>8} {fmt(r['nll'], '.2f'):>8}  {r['status']}")


@app.command()
@friendly
def report(run: Optional[Path] = typer.Argument(None, help="Run folder (default: the latest run)."),
           out: Optional[Path] = typer.Option(None, "--out", help="HTML file to write (default: "
                                              "RUN/report.html)."),
           seed: int = typer.Option(0, "--seed", help="Seed of the prior chains and interpolation "
                                    "drawn for the page."),
           device: str = DEVICE):
    """One self-contained HTML page for a run: settings, training curves, validation samples over
    time, the prior chain and its energy profile (paper Table 3), latent diagnostics,
    interpolations and the Table 2 row beside the paper's. Images inlined; opens offline."""
    from pipeline.report import ReportConfig, build_report
    from common.storage import atomic_write
    from textebm.runs import resolve
    run_dir = resolve(run)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    model = _open_run(run_dir, device) if (run_dir / "checkpoint.pt").exists() else None
    page = build_report(run_dir, model, ReportConfig(seed=seed))
    dest = out or run_dir / "report.html"
    atomic_write(dest, page.encode("utf-8"))
    err.print(f"report -> {dest}")


# ---- evaluation: language models, forward / reverse perplexity, NLL --------------------------
lm_app = typer.Typer(help="Language models used as evaluators (n-gram, LSTM).", no_args_is_help=True)
app.add_typer(lm_app, name="lm")
JSON = typer.Option(False, "--json", help="One JSON object on stdout.")
TEXT_FILE = dict(exists=True, dir_okay=False, help="Text, one sentence per line.")

@lm_app.command("ngram")
@friendly
def lm_ngram(train_file: Path = typer.Option(..., "--train", **TEXT_FILE),
             eval_file: Path = typer.Option(..., "--eval", **TEXT_FILE),
             order: int = typer.Option(5, "--order", help="n-gram order, 1 to 6."),
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
def lm_lstm(train_file: Path = typer.Option(..., "--train", **TEXT_FILE),
            valid_file: Path = typer.Option(..., "--valid", **TEXT_FILE),
            eval_file: Path = typer.Option(..., "--eval", **TEXT_FILE),
            out_dir: Optional[Path] = typer.Option(None, "--out", help="Save (and resume) the LM here."),
            max_epochs: int = typer.Option(30, "--max-epochs", help="Upper bound on epochs."),
            size: int = typer.Option(300, "--size", help="Embedding and hidden size."),
            device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
            precision: str = PRECISION, as_json: bool = JSON, tensorboard: Optional[Path] = TENSORBOARD):
    """Train a word-level LSTM LM (SGD, lr decay on plateau, early stopping) and score a file."""
    from corpora.vocab import Vocab
    from lm_eval.lstm_lm import LSTMLMConfig, evaluate_ppl, train_lstm_lm
    from lm_eval.perplexity import read_samples
    from textebm.device import pick_device
    train_s = read_samples(train_file)
    vocab = Vocab.build(train_s)
    cfg = LSTMLMConfig(embed=size, hidden=size, max_epochs=max_epochs, precision=precision)
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


LM_KIND = typer.Option("ngram", "--lm", help="ngram (modified Kneser-Ney) or lstm.")
ORDER = typer.Option(5, "--order", help="n-gram order.")


@app.command()
@friendly
def perplexity(samples: Path = typer.Argument(..., exists=True, dir_okay=False,
                                              help="Generated sentences, one per line."),
               corpus: str = typer.Option(..., "--corpus", help="ptb, yahoo, snli, demo, a folder or a file."),
               lm: str = LM_KIND, order: int = ORDER, data_dir: Optional[Path] = DATA_DIR,
               device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
               precision: str = PRECISION, as_json: bool = JSON):
    """Forward PPL (samples under a real-text LM) and reverse PPL (test text under a samples LM)."""
    from lm_eval.lstm_lm import LSTMLMConfig
    from lm_eval.perplexity import PPLConfig, perplexities, read_samples
    from textebm.device import pick_device
    ppl_cfg = PPLConfig(lm=lm, order=order, lstm=LSTMLMConfig(precision=precision))
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


@app.command()
@friendly
def evaluate(checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Run folder (default: the latest run)."),
             num_samples: int = typer.Option(10000, "--num-samples", help="Sentences to generate."),
             decode: str = typer.Option("sample", "--decode", help="sample (ancestral) or greedy."),
             lm: str = typer.Option("ngram", "--lm", help="The judge LMs of FPPL/RPPL: ngram "
                                    "(modified Kneser-Ney), lstm, or both as ngram,lstm (one set "
                                    "of samples, NLL and diagnostics for both). With lstm the NLL "
                                    "part also scores its sentences under the forward LSTM judge "
                                    "(paired, eval.json nll.judge_lstm)."),
             order: int = ORDER,
             lstm_epochs: int = typer.Option(30, "--lstm-epochs", help="Most epochs of each LSTM LM "
                                             "judge (it also stops on validation plateaus)."),
             nll_sentences: int = typer.Option(0, "--nll-sentences", help="Test sentences for the "
                                               "importance-weighted NLL (0: all; n: a random n, "
                                               "seeded by --seed; -1: skip NLL)."),
             nll_samples: int = typer.Option(20, "--nll-samples", help="Importance samples (AIS "
                                             "chains) per sentence, a multiple of 4."),
             nll_temperatures: int = typer.Option(50, "--nll-temperatures", help="AIS temperatures "
                                                  "from the fitted q0 to each sentence's posterior "
                                                  "(0: plain importance sampling from q0)."),
             logz_temperatures: int = typer.Option(40000, "--logz-temperatures", help="AIS "
                                                   "temperatures of log Z (3 runs of 500 chains)."),
             coherence_temperatures: int = typer.Option(10000, "--coherence-temperatures",
                                                        help="AIS temperatures of log Z in the "
                                                        "latent part's coherence check."),
             diag_sentences: int = typer.Option(500, "--diag-sentences", help="Test sentences for the "
                                                "latent diagnostics (0: skip them)."),
             noise: Optional[float] = typer.Option(None, "--noise", help="Prior chain noise scale of "
                                                   "the samples (default: the run's sample_noise0)."),
             sampler: Optional[str] = SAMPLER,
             seed: int = typer.Option(0, "--seed", help="Seed of the samples and of the NLL estimate."),
             parts: str = typer.Option("ppl,nll,latent", "--parts", help="What to compute: ppl "
                                       "(samples, FPPL, RPPL), nll, latent, comma-separated; the "
                                       "other parts' results are kept from the run's eval.json."),
             data_dir: Optional[Path] = DATA_DIR,
             device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
             precision: Optional[str] = RUN_PRECISION, compile: bool = COMPILE, as_json: bool = JSON,
             last_weights: bool = LAST_WEIGHTS):
    """Sample from a trained model, then FPPL, RPPL, importance-weighted NLL (paper Table 2) and
    the latent diagnostics (gap, active units, I(x;z); on demo the grammar's own checks).
    eval.json is written after each part; an interrupted NLL resumes where it stopped."""
    from rich.progress import Progress
    from pipeline.evaluate import EvalConfig, evaluate_run
    from textebm.runs import resolve
    cfg = EvalConfig(num_samples=num_samples, decode=decode, lm=lm, order=order,
                     lstm_epochs=lstm_epochs, nll_sentences=nll_sentences, nll_samples=nll_samples,
                     nll_temperatures=nll_temperatures, logz_temperatures=logz_temperatures,
                     coherence_temperatures=coherence_temperatures,
                     diag_sentences=diag_sentences, noise=noise, sampler=sampler, seed=seed,
                     precision=precision or "fp32",
                     parts=parts)
    cfg.check()  # a bad --lm, --parts or --nll-samples fails here, before anything is loaded
    run_dir = resolve(checkpoint)
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
        if (run_dir / "eval.md").exists():
            out.print((run_dir / "eval.md").read_text(), markup=False, highlight=False)
        if res.get("nll") and "fppl" not in res:
            r = res["nll"]
            out.print(f"NLL {r['nll']:.2f} ± {r['nll_se']:.2f} nats/sentence "
                      f"({r['of_test']} test sentences); log Z {r['log_z']:.2f} "
                      f"(AIS spread {r['log_z_estimate'].get('spread', 0):.2f}); importance ESS "
                      f"median {r['ess']['median']:.1f} of {r['ess']['of']}; floor violations "
                      f"{r['floor']['violations']} of {r['floor']['checked']}", highlight=False)
        if res.get("latent"):
            out.print("latent: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in res["latent"].items()), highlight=False)
        out.print(f"wrote {run_dir / 'eval.json'}, eval.md and samples.txt")


if __name__ == "__main__":
    app()
