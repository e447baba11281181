"""Datasets: from (image set, label set) pairs to typed, checked records.

`tables` and `mltable` read label-set files (`formats` names the types), `literal` and `labels`
parse their cells, `images` finds and probes image files, `dataset` turns all of it into `Records`
(`records`) with every problem counted, `report` summarises that for `trainkit validate`, and
`demo` writes the built-in synthetic dataset.
"""
