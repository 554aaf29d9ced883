"""Progress lines shared by the long-running jobs (preprocessing, batch inference)."""

from __future__ import annotations

import math


def format_eta(seconds: float) -> str:
    """Seconds left -> '1h05m' / '4m09s'; '?' while the rate is still unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
