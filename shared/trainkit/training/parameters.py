"""Which of a model's parameters train: counted, with the frozen parts named by module."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_SHOWN = 6  # frozen modules named in the log line; run.json lists them all


@dataclass(frozen=True)
class ParameterCount:
    """A model's parameter count, how much of it the optimiser updates, and the wholly frozen modules."""

    total: int
    trainable: int
    frozen_modules: tuple[str, ...]

    def to_json(self) -> dict:
        return {"total": self.total, "trainable": self.trainable, "frozen_modules": list(self.frozen_modules)}

    def describe(self) -> str:
        """One log line, e.g. `parameters: 18.93M, 17.20M train; frozen: backbone.body.0, backbone.body.1`."""
        text = f"parameters: {_millions(self.total)}, {_millions(self.trainable)} train"
        if self.frozen_modules:
            shown = ", ".join(self.frozen_modules[:_SHOWN])
            more = len(self.frozen_modules) - _SHOWN
            text += f"; frozen: {shown}" + (f" and {more} more" if more > 0 else "")
        elif self.trainable == self.total:
            text += " (all)"
        return text


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count `model`'s parameters and name the outermost modules whose parameters are all frozen."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{outer}.") for outer in frozen):
            continue
        own = list(module.parameters())
        if own and not any(p.requires_grad for p in own):
            frozen.append(name)
    return ParameterCount(total, trainable, tuple(frozen))


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"
