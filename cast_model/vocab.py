"""The project's vocabulary, written down once: datasets, label heads, samplings, head naming and the
multi-view average. Preprocessing, training and inference import these names instead of spelling them.

No imports beyond the standard library (torch only for type hints), so that preprocessing, which never
needs torch, can import it cheaply; ``cast_model/__init__`` loads the model modules lazily for the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type hints only: importing torch costs seconds
    import torch

# The datasets this project knows (a recipe ``configs/<dataset>.yaml`` each).
DATASETS: tuple[str, ...] = ("ssv2", "k400", "ek100")

# Label heads. The label-map format everywhere is {head: {class_id_str: class_name}}.
SINGLE_HEAD: tuple[str, ...] = ("label",)
EK100_HEADS: tuple[str, ...] = ("verb", "noun")
# CASTConfig.head -> the label heads it predicts.
HEADS: dict[str, tuple[str, ...]] = {"single": SINGLE_HEAD, "verb_noun": EK100_HEADS}

# How a clip's frames are picked from a video (pipelines.sampling).
SAMPLINGS: tuple[str, ...] = ("uniform", "dense")

# How a model is evaluated (TrainConfig fields of the same names): training writes them into the
# checkpoint's ``extra`` beside ``dataset`` and ``heads``, and inference takes its views from there.
EVAL_VIEW_KEYS: tuple[str, ...] = ("sampling", "sampling_rate", "test_clips", "test_crops")
# The checkpoint's contract: the ``extra`` keys inference reads and nothing else (no name or recipe guessing).
CONTRACT_KEYS: tuple[str, ...] = ("dataset", "heads", *EVAL_VIEW_KEYS)


def head_prefix(head: str) -> str:
    """Prefix of a head's metric/column names: none for the single ``label`` head, ``verb_``/``noun_``
    for EK100 (``top_ids`` / ``verb_top_ids``)."""
    return "" if head == "label" else f"{head}_"


def label_key(head: str) -> str:
    """Name of a head's known label in an inference record/batch: ``label_label``, ``label_verb``."""
    return f"label_{head}"


def is_action(heads: tuple[str, ...] | list[str]) -> bool:
    """Whether ``heads`` are EK100's verb and noun, whose pair is the action."""
    return set(heads) == set(EK100_HEADS)


def as_heads(output: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CAST's output as ``{head: logits}`` (a single-label model's tensor becomes ``{"label": ...}``)."""
    return output if isinstance(output, dict) else {SINGLE_HEAD[0]: output}


def view_average(logits: torch.Tensor, views: int) -> torch.Tensor:
    """(B*V, C) logits of V views per video -> (B, C) float32 softmax averaged over the views, as in
    the paper's multi-view test (clips x crops)."""
    return logits.float().softmax(-1).view(-1, views, logits.shape[-1]).mean(1)


__all__ = ["DATASETS", "SINGLE_HEAD", "EK100_HEADS", "HEADS", "SAMPLINGS", "EVAL_VIEW_KEYS", "CONTRACT_KEYS",
           "head_prefix", "label_key", "is_action", "as_heads", "view_average"]
