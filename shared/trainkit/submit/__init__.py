"""Run a trainer's published image as an AzureML job: `trainkit submit` and its Python API.

`refs` reads dataset references, `spec` turns a typed `SubmitConfig` into AzureML SDK v2 command-job
specifications (YAML, checked offline by azure-ai-ml's own loader), `workspace` submits them,
`image_manifest` reads the publish manifest that names each trainer's image by digest.
azure-ai-ml is imported only here, never by training: install it with `pip install 'trainkit[submit]'`.
"""
