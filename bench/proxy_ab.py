"""The interleaved A/B of ``bench/proxy.py --base REV --ab-rounds N``: this tree, the
same at another revision and other proxies, measured in turn, the order reversed every
other round (a busy neighbour then weighs on all alike); medians and ratios."""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def interleaved(names: list[str], rounds: int, measure: Callable[[str], float | None]) -> None:
    """``measure(name)``: requests per CPU second of one run of ``name`` (None: no CPU
    used). The first name is this tree: its ratio to every other is printed."""
    per: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        order = names if i % 2 == 0 else list(reversed(names))
        for name in order:
            value = measure(name)
            if value is not None:
                per[name].append(value)
        print(f"A/B round {i + 1} (load {os.getloadavg()[0]:.1f}): " + ", ".join(
            f"{n} {v[-1]:.0f}" for n, v in per.items() if v), flush=True)  # fmt: skip
    med = {n: statistics.median(v) for n, v in per.items() if v}
    mine = med.get(names[0])
    if not mine:
        return
    print("A/B medians (req/CPU-s, metrics + access log on): " + ", ".join(
        f"{n} {v:.0f}" for n, v in med.items()), flush=True)  # fmt: skip
    for n, v in med.items():
        if n != names[0]:
            print(f"  {names[0]} / {n}: {mine / v:.2f}x", flush=True)


def base_tree(rev: str, tmp: Path) -> Path:
    """``--base``: a checkout, or a git revision of this repository (exported to tmp)."""
    path = Path(rev)
    if path.is_dir():
        return path.resolve()
    out = tmp / "base"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True,
                             check=False)  # fmt: skip
    if archive.returncode != 0:
        raise SystemExit(f"--base {rev}: neither a folder nor a revision: "
                         f"{archive.stderr.decode(errors='replace').strip()}")  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out
