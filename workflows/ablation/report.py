"""The ablation's comparison: mean and spread over seeds per task and variant, as CSV, Markdown and a
bar chart, the oracle ceilings beside them, and the gate (CAST best on the balance by more than the
seeds' spread, where the task leaves room for a lead)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

# What each child run logs as test_<measure>: action top-1, noun (appearance) and verb (motion) accuracy,
# and am_balance, the appearance-motion balance (their harmonic mean).
MEASURES = ("top1", "appearance_acc", "motion_acc", "am_balance")
GATE_MEASURE = "am_balance"
# The oracle whose ceiling says whether a task can separate CAST from the variants without exchange: what
# appearance and motion seen apart (any sum of the two) can reach at best.
UNBOUND_EVIDENCE = "appearance + motion (summed)"


def summarize(rows: Sequence[dict[str, Any]], order: Sequence[str], labels: dict[str, str]) -> pd.DataFrame:
    """One row per (task, variant) in ``order``: seeds, and mean / std (sample std over seeds; 0 for one
    seed) of every measure, from per-run ``rows`` holding task, variant, seed and ``test_<measure>``."""
    df = pd.DataFrame(rows)
    out = []
    for task in dict.fromkeys(df["task"]):
        for variant in order:
            part = df[(df["task"] == task) & (df["variant"] == variant)]
            if part.empty:
                continue
            row = {"task": task, "variant": variant, "label": labels[variant], "seeds": len(part)}
            for m in MEASURES:
                values = part[f"test_{m}"].to_numpy(dtype=np.float64)
                row[f"{m}_mean"] = float(values.mean())
                row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out.append(row)
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, oracles: Sequence[dict[str, Any]]) -> str:
    """The table (mean ± std over seeds, held-out test split) and each task's oracle ceilings."""
    lines = []
    for task, part in table.groupby("task", sort=False):
        lines += [f"### task `{task}` (held-out test split, mean ± std over {int(part['seeds'].max())} seeds)", "",
                  "| variant | action top-1 | noun acc (appearance) | verb acc (motion) | balance (harmonic mean) |",
                  "|---|---|---|---|---|"]
        for _, r in part.iterrows():
            cells = [f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}" for m in MEASURES]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
        rows = [o for o in oracles if o["task"] == task]
        if rows:
            lines += ["", f"Oracle ceilings of `{task}` from its definition (action top-1 chance "
                      f"{rows[0]['chance_top1']:.3f}):", "",
                      "| evidence | action top-1 | noun | verb |", "|---|---|---|---|"]
            lines += [f"| {o['evidence']} | {o['ceiling_top1']:.3f} | {o['ceiling_noun']:.3f} | {o['ceiling_verb']:.3f} |"
                      for o in rows]
        lines.append("")
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Bars of action top-1 and balance per variant, one panel per task, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = table[table["task"] == task]
        x = np.arange(len(part))
        for i, (m, name) in enumerate((("top1", "action top-1"), (GATE_MEASURE, "appearance-motion balance"))):
            ax.bar(x + (i - 0.5) * 0.38, part[f"{m}_mean"], 0.38, yerr=part[f"{m}_std"], capsize=2, label=name)
        ax.set_xticks(x, part["label"], rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"task {task}: held-out test, mean ± std over seeds", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class Gate:
    task: str
    cast: float  # CAST's mean balance
    runner_up: str  # the best other variant
    other: float
    spread: float  # the larger of the two std over seeds
    # True where appearance and motion seen apart can be perfect (the one-object task): a late fusion
    # can tie CAST at the top, so CAST must not be behind; elsewhere (binding) it must lead
    tie_allowed: bool = False

    @property
    def lead(self) -> float:
        return self.cast - self.other

    @property
    def passed(self) -> bool:
        return self.lead > self.spread or (self.tie_allowed and self.lead >= -self.spread)

    def line(self) -> str:
        verdict = "passes" if self.passed else "FAILS"
        need = "not behind by more than" if self.tie_allowed else "a lead above"
        return (f"[gate] {self.task}: CAST balance {self.cast:.3f} vs {self.runner_up} {self.other:.3f}: lead "
                f"{self.lead:+.3f}, needs {need} the seed spread {self.spread:.3f}: {verdict}")


def gates(table: pd.DataFrame, unbound_ceiling: dict[str, float] | None = None) -> list[Gate]:
    """Per task: CAST's lead on the balance over the best other variant, against the seeds' spread.
    ``unbound_ceiling``: each task's top-1 ceiling for appearance and motion seen apart; where it is 1 a
    tie at the top passes (no variant can be ahead of a perfect late fusion), elsewhere a lead is needed."""
    unbound_ceiling = unbound_ceiling or {}
    out = []
    for task, part in table.groupby("task", sort=False):
        cast = part[part["variant"] == "cast"].iloc[0]
        others = part[part["variant"] != "cast"]
        if others.empty:
            continue
        best = others.loc[others[f"{GATE_MEASURE}_mean"].idxmax()]
        spread = max(cast[f"{GATE_MEASURE}_std"], best[f"{GATE_MEASURE}_std"])
        out.append(Gate(task, float(cast[f"{GATE_MEASURE}_mean"]), str(best["variant"]),
                        float(best[f"{GATE_MEASURE}_mean"]), float(spread),
                        tie_allowed=unbound_ceiling.get(str(task), 0.0) >= 1.0))
    return out
