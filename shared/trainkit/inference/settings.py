"""What a saved model needs besides its weights to be used: its task, input size, normalisation, threshold."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainkit.errors import UserError
from trainkit.params import CommonParams, params_to_dict
from trainkit.tasks import TASKS
from trainkit.trainer import Trainer

SCHEMA = "trainkit.model/v1"
DEFAULT_MIN_SCORE = 0.5  # detections below this are left out of answers, unless the caller says otherwise


@dataclass(frozen=True)
class ModelSettings:
    """settings.json of a saved model (its `artifacts/`), read by the pyfunc, `predict` and ONNX users."""

    trainer: str  # the trainer's name
    trainer_module: str  # the module defining TRAINER, importable from the model's code/ folder
    task: str  # the task's name (trainkit.tasks.TASKS)
    image_size: int  # the square side images are resized to, as in training
    mean: tuple[float, float, float]  # (x / 255 - mean) / std, as the harness fed the model
    std: tuple[float, float, float]
    min_score: float = DEFAULT_MIN_SCORE
    hyperparameters: dict = field(default_factory=dict)
    tiling: dict | None = None  # detection: the windows images are cut into (trainkit.params.TileSpec)
    trainkit_version: str = ""

    @classmethod
    def of(cls, trainer: Trainer, module: str, params: CommonParams) -> ModelSettings:
        """The settings of a model `trainer` (defined in importable `module`) trained with `params`."""
        import trainkit
        from trainkit.params import tile_spec

        tiles = tile_spec(params) if trainer.task.tiles else None
        return cls(
            trainer=trainer.name,
            trainer_module=module,
            task=trainer.task.name,
            image_size=trainer.loader_config(params, False).image_size,
            mean=tuple(trainer.mean),
            std=tuple(trainer.std),
            hyperparameters=params_to_dict(params),
            tiling=tiles.to_json() if tiles is not None else None,
            trainkit_version=trainkit.__version__,
        )

    def to_json(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def load(cls, path: Path) -> ModelSettings:
        """Read settings.json; a UserError naming the file when it is not one of ours."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: not a readable trainkit model settings file ({exc})") from None
        return cls.from_document(document, str(path))

    @classmethod
    def from_document(cls, document: object, source: str) -> ModelSettings:
        """Settings from their JSON document (settings.json, or an ONNX file's metadata); a UserError
        naming `source` when it is not one of ours."""
        if not isinstance(document, dict) or document.pop("schema", None) != SCHEMA:
            raise UserError(f"{source}: field 'schema' is not {SCHEMA!r}: not a trainkit model (train it with "
                            "trainkit)")  # fmt: skip
        try:
            settings = cls(**document)
        except TypeError as exc:
            raise UserError(f"{source}: {exc}") from None
        if settings.task not in TASKS:
            raise UserError(f"{source}: field 'task' is {settings.task!r}, a task this trainkit does not know (it "
                            f"knows {', '.join(TASKS)}): use the trainkit version that trained it")  # fmt: skip
        return cls(**{**asdict(settings), "mean": tuple(settings.mean), "std": tuple(settings.std)})
