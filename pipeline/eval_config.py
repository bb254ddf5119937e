"""`textebm evaluate`'s settings (EvalConfig), apart from pipeline/evaluate.py so that the command
line reads their helps without loading the model's code."""
from __future__ import annotations

from dataclasses import dataclass

from textebm.config import setting

LMS = ("ngram", "lstm")
PARTS = ("ppl", "nll", "latent")


@dataclass
class EvalConfig:
    """`textebm evaluate`'s settings; each reaches the command line as `--set eval.KEY=VALUE`
    (textebm.config.parse_settings with EVAL_SETTINGS), the common ones as options too."""
    num_samples: int = setting(10000, "Sentences to generate.")
    decode: str = setting("sample", "sample (ancestral) or greedy decoding of the samples.")
    lm: str = setting("ngram", "The judge LMs of FPPL/RPPL: ngram (modified Kneser-Ney), lstm, or "
                      "both as ngram,lstm (one set of samples, NLL and diagnostics for both); with "
                      "lstm the NLL part also scores its sentences under the forward LSTM judge "
                      "(paired, eval.json nll.judge_lstm).")
    order: int = setting(5, "n-gram order of the n-gram judges.")
    lstm_epochs: int = setting(30, "Most epochs of each LSTM LM judge, forward and reverse (it also "
                               "stops on validation plateaus).")
    nll_sentences: int = setting(0, "Test sentences for the importance-weighted NLL (0: all; n: a "
                                 "random n, seeded by the seed; -1: skip the NLL).")
    nll_samples: int = setting(20, "Importance samples (AIS chains) per sentence, a multiple of 4.")
    nll_q_samples: int = setting(500, "Importance samples a sentence from an amortized run's q(z|x).")
    nll_proposal: str = setting("auto", "auto: an amortized run's q(z|x), else fitted (+ AIS).")
    nll_temperatures: int = setting(50, "AIS temperatures from the fitted q0 to each sentence's "
                                    "posterior (0: plain importance sampling from q0).")
    logz_temperatures: int = setting(40000, "AIS temperatures of log Z (3 runs of 500 chains).")
    coherence_temperatures: int = setting(10000, "AIS temperatures of log Z in the latent part's "
                                          "coherence check.")
    diag_sentences: int = setting(500, "Test sentences for the latent diagnostics (0: skip them).")
    noise: float | None = setting(None, "Prior chain noise of the samples; none: the run's.")
    sampler: str | None = setting(None, "chain (short-run), mala (p_alpha itself) or aggregate (a "
                                  "Gaussian fitted to the posterior codes); none: the run's.")
    seed: int = setting(0, "Seed of the samples and of the NLL estimate.")
    precision: str = setting("fp32", "Precision of the evaluator LSTM LMs (the model's is set "
                             "when it is loaded).")
    parts: str = setting(",".join(PARTS), "What to compute: ppl (samples, FPPL, RPPL), nll, latent, "
                         "comma-separated; the other parts' results are kept from the run's eval.json.")

    def lms(self) -> list[str]:
        return _names(self.lm, LMS, "--lm")

    def part_list(self) -> list[str]:
        return _names(self.parts, PARTS, "--parts")

    def check(self) -> None:
        """Raise ValueError for a bad option now, not after the parts before it have run (the
        NLL's log Z alone takes minutes)."""
        self.lms()
        if "nll" in self.part_list() and self.nll_sentences >= 0:
            try:
                self.nll_config()
            except ValueError as e:
                raise ValueError(f"--nll-samples: {e}") from None

    def nll_config(self):
        """The importance-weighted NLL's settings (NLLConfig checks them when built)."""
        from textebm.ais import AISConfig
        from textebm.nll import NLLConfig
        return NLLConfig(samples=self.nll_samples, temperatures=self.nll_temperatures, seed=self.seed,
                         q_samples=self.nll_q_samples, proposal=self.nll_proposal,
                         ais=AISConfig(temperatures=self.logz_temperatures, seed=self.seed))


# `--set eval.KEY=VALUE` reaches every EvalConfig field; evaluate's rarer options of before are
# these settings now, and still work, with a note (textebm.config.translate_flags).
EVAL_SETTINGS = {"eval": EvalConfig}
EVAL_FLAGS = {"--lstm-epochs": "eval.lstm_epochs", "--nll-samples": "eval.nll_samples",
              "--nll-temperatures": "eval.nll_temperatures",
              "--logz-temperatures": "eval.logz_temperatures",
              "--coherence-temperatures": "eval.coherence_temperatures"}


def _names(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in allowed for n in names) or len(set(names)) < len(names):
        raise ValueError(f"{option} takes a comma-separated subset of {', '.join(allowed)}, "
                         f"got {text!r}")
    return names
