"""trainkit: dataset parsing, loading and the training contract for AzureML training images."""

__version__ = "0.1.0"
