"""Loading: batches from records with NVIDIA DALI, on a GPU or on the CPU.

`loader` is the iterable the harness uses, `dali_pipeline` the DALI graph it runs, `augment` the
per-sample crop and flip decisions, `distributed` the shard and core bookkeeping of several
processes. What a batch holds is `trainkit.batch`, which needs none of this.
"""
