"""A run's curves: loss and validation metrics against the optimiser step, as PNGs."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: dict[str, list[tuple[int, float]]], folder: Path) -> list[Path]:
    """One PNG per metric series (x: optimiser step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, points in history.items():
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = folder / f"{name.replace('/', '_')}.png"
        fig.savefig(out)
        plt.close(fig)
        written.append(out)
    return written
