"""Find the trainer an image (or a venv) runs: TRAINKIT_TRAINER / --trainer names a file, folder or module."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from trainkit.errors import UserError
from trainkit.trainer import Trainer


@dataclass(frozen=True)
class LoadedTrainer:
    """A trainer and where its code lives (saved with the model so the model can be loaded again)."""

    trainer: Trainer
    module: ModuleType
    source: Path | None  # the module's file, for MLflow's code_paths


def load_trainer(spec: str) -> LoadedTrainer:
    """Load `spec`: a trainer folder (holding one *_trainer.py), a .py file, or an importable module name.

    The module must define TRAINER, an instance of trainkit.trainer.Trainer.
    """
    if not spec:
        raise UserError(
            "no trainer given: set TRAINKIT_TRAINER (trainer images set it) or pass --trainer, "
            "e.g. --trainer trainers/detector"
        )
    path = Path(spec)
    if path.is_dir():
        candidates = sorted(path.glob("*_trainer.py"))
        if len(candidates) != 1:
            raise UserError(f"trainer folder {path} must hold exactly one *_trainer.py file (found {len(candidates)})")
        path = candidates[0]
    if path.suffix == ".py":
        module = _import_file(path)
        source: Path | None = path.resolve()
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as exc:
            raise UserError(
                f"trainer {spec!r} is neither a trainer folder, a .py file nor an importable module ({exc})"
            ) from None
        source = Path(module.__file__).resolve() if getattr(module, "__file__", None) else None
    trainer = getattr(module, "TRAINER", None)
    if not isinstance(trainer, Trainer):
        raise UserError(
            f"trainer module {module.__name__} must define TRAINER = <a trainkit.trainer.Trainer subclass>()"
        )
    return LoadedTrainer(trainer, module, source)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserError(f"trainer file {path} does not exist")
    name = path.stem  # registered under its own name so pickled models can import it again
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import trainer file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise UserError(f"trainer file {exc.filename or path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the trainer's own code failed while importing: its author's to fix
        sys.modules.pop(name, None)
        raise UserError(f"trainer file {_where(exc, path)}: {type(exc).__name__}: {exc}") from None
    return module


def _where(exc: BaseException, path: Path) -> str:
    """`file:line` of the deepest frame in the trainer's own file, where the import failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    lines = [frame.lineno for frame in frames if Path(frame.filename) == path.resolve()]
    return f"{path}:{lines[-1]}" if lines else str(path)
