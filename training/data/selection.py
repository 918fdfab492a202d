"""Dataset selection strings as AMPLIFY users write them.

    '[libero_10:traj0.9]'            first 90% of each task's demos, tracks only
    '[libero_10:traj-0.1]'           last 10% of each task's demos
    '[libero_90:action0.9]'          first 90%, action-labelled (inverse-dynamics training)
    '[libero_10:traj0.9, libero_90]' several datasets; a bare suite means all demos, 'traj'

A positive fraction takes the first ``round(f * n)`` demos (at least one), a negative one the last.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_ITEM = re.compile(r"^(?P<suite>[A-Za-z0-9_.\-/]+?)(?::(?P<kind>traj|action)(?P<frac>-?[0-9.]+)?)?$")


@dataclass(frozen=True)
class Selection:
    """One dataset of a selection string: a suite, the kind of labels needed, a fraction of demos."""

    suite: str
    kind: str = "traj"  # traj: tracks (MT, FD) | action: actions needed (ID)
    fraction: float = 1.0  # > 0: first part, < 0: last part

    def demo_indices(self, num_demos: int) -> list[int]:
        """Which of a task's ``num_demos`` demos (sorted by index) this selection takes."""
        if num_demos <= 0:
            return []
        k = max(1, min(num_demos, int(math.floor(abs(self.fraction) * num_demos + 0.5))))
        return list(range(k)) if self.fraction > 0 else list(range(num_demos - k, num_demos))


def parse_selection(text: str | list[str]) -> list[Selection]:
    """Parse ``'[suite:traj0.9, other:action-0.1]'`` (or a list of such strings) into Selections.

    Raises ValueError naming the bad item and the expected form.
    """
    if isinstance(text, (list, tuple)):
        return [s for item in text for s in parse_selection(item)]
    body = text.strip()
    if body.startswith("["):
        if not body.endswith("]"):
            raise ValueError(f"dataset selection {text!r}: missing closing ']'")
        body = body[1:-1]
    out = []
    for raw in body.split(","):
        item = raw.strip().strip("'\"")
        if not item:
            continue
        m = _ITEM.match(item)
        if not m:
            raise ValueError(
                f"dataset selection item {item!r}: expected 'suite', 'suite:traj<fraction>' or "
                f"'suite:action<fraction>' (e.g. 'libero_10:traj0.9', 'libero_10:traj-0.1')"
            )
        frac = float(m["frac"]) if m["frac"] else 1.0
        if frac == 0 or abs(frac) > 1:
            raise ValueError(f"dataset selection item {item!r}: fraction must be in [-1, 0) or (0, 1], got {frac}")
        out.append(Selection(m["suite"], m["kind"] or "traj", frac))
    if not out:
        raise ValueError(f"dataset selection {text!r} names no dataset")
    return out
