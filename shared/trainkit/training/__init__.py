"""Training: the harness that runs a trainer, and what it leans on.

`harness` runs epochs, evaluation and outputs; `discovery` finds the trainer, `devices` the device,
`ddp` the process group, `shm` checks shared memory, `checkpoint` writes and reads resumable state,
`tracking` talks to MLflow.
"""
