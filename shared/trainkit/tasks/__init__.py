"""Tasks: what differs between detection, object crops and the tasks to come (see `base`).

A trainer names its task (`task = Detection()`); a saved model names it by `Task.name`, which
`task_named` turns back into the task.
"""

from __future__ import annotations

from trainkit.tasks.base import Evaluator, Prediction, Task, Truth
from trainkit.tasks.detection import Detection
from trainkit.tasks.object_crops import ObjectCrops

TASKS: dict[str, type[Task]] = {task.name: task for task in (Detection, ObjectCrops)}

__all__ = ["TASKS", "Detection", "Evaluator", "ObjectCrops", "Prediction", "Task", "Truth", "task_named"]


def task_named(name: str) -> Task:
    """The task a saved model names; a ValueError for one this trainkit does not know."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]()
