"""`--tensorboard DIR`: a run's scalars, sample text and figures as TensorBoard event files.

Optional: it needs the `tensorboard` package (`pip install -e '.[tensorboard]'`), and says so in
one line where it is missing. The layout is the usual one: `train/...` scalars every step,
`valid/...` at each validation, `samples` as text and figures under `prior/`. The event files
add nothing to the run: metrics.jsonl stays the record.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path


class TensorBoardMissing(ValueError):
    """--tensorboard without the tensorboard package (a ValueError: the CLI prints one line)."""


def require() -> None:
    """TensorBoardMissing (one line) where the tensorboard package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise TensorBoardMissing("--tensorboard needs the tensorboard package: pip install "
                                 "tensorboard (or pip install -e '.[tensorboard]')") from None


def open_writer(log_dir: Path | str):
    """A torch SummaryWriter on `log_dir`; TensorBoardMissing where tensorboard is not installed."""
    require()
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(log_dir))


def scalars(writer, prefix: str, values: dict, step: int, keys=None) -> None:
    """Each finite number of `values` (or of `keys`) as `prefix/key` at `step`."""
    for k in keys or values:
        v = values.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            writer.add_scalar(f"{prefix}/{k}", v, step)


def samples_text(writer, tag: str, sentences: list[str], step: int) -> None:
    """Sentences as one markdown list (TensorBoard's text tab renders markdown)."""
    writer.add_text(tag, "\n".join(f"- {s}" for s in sentences) or "(none)", step)


def read_scalars(log_dir: Path | str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the event files in `log_dir`: what TensorBoard will show."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
