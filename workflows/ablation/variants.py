"""The networks the ablation compares: CAST and what the paper's Tables 1-2 set it against.

Each trained variant is CAST's config with a few fields changed; every one gets the same frozen experts,
the same recipe and the same steps, and CAST's EPIC-KITCHENS heads (a noun head and a verb head), as
the paper's Table 1 compares them on EK100. The ensemble is not trained: it averages, head by head, the
softmax outputs the two fine-tuned single experts saved (the paper's "ensemble of experts").

Where each head reads: CAST and its exchange ablations (no exchange, T2S only, S2T only) put the noun
head on the spatial expert's feature and the verb head on the temporal expert's, as the paper's code
does; a single expert carries both heads; late fusion, which the paper's code does not have, gives each
head both experts' final features side by side (``fusion="concat"``), so its two rows differ from no
exchange in what each head sees, not only in name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variant:
    name: str  # the short name used in run names, tables and flags
    label: str  # how the table and chart print it
    overrides: dict[str, Any] = field(default_factory=dict)  # CASTConfig fields
    ensemble_of: tuple[str, ...] = ()  # not trained: the mean of these variants' softmax outputs

    @property
    def trained(self) -> bool:
        return not self.ensemble_of


VARIANTS: tuple[Variant, ...] = (
    Variant("cast", "CAST", {}),
    Variant("spatial", "spatial expert", dict(experts="spatial", bcast_blocks=())),
    Variant("temporal", "temporal expert", dict(experts="temporal", bcast_blocks=())),
    Variant("ensemble", "ensemble of experts", ensemble_of=("spatial", "temporal")),
    Variant("late_fusion", "late fusion (concat)", dict(bcast_blocks=(), fusion="concat")),
    Variant("no_exchange", "no exchange", dict(bcast_blocks=())),
    Variant("t2s_only", "T2S only", dict(directions=("t2s",))),
    Variant("s2t_only", "S2T only", dict(directions=("s2t",))),
)
BY_NAME = {v.name: v for v in VARIANTS}
NAMES = tuple(BY_NAME)


def select(names: tuple[str, ...]) -> tuple[Variant, ...]:
    """The variants named, in the table's order; an ensemble needs both of its sources. Raises
    ValueError naming what is unknown or missing."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(NAMES)}")
    if "cast" not in names:
        raise ValueError("the ablation compares against CAST: --variants must include cast")
    for n in names:
        missing = [s for s in BY_NAME[n].ensemble_of if s not in names]
        if missing:
            raise ValueError(f"variant {n} averages {BY_NAME[n].ensemble_of}: add {missing} to --variants")
    return tuple(v for v in VARIANTS if v.name in names)
