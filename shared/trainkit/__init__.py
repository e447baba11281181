"""trainkit: dataset parsing, loading and the training contract for AzureML training images.

At the top: the command (`cli`, `config`, `contract`), shared leaves (`errors`, `atomic`) and the
model author's API (`trainer`, `params`, `classmap`, `batch`, `evaluation`, `weights`). Below, by concern:
`data` (label sets to records), `loading` (records to batches), `training` (the harness),
`inference` (the trained model, served and run: `trainkit predict`) and `submit` (AzureML jobs).
"""

__version__ = "0.1.0"
