"""Using a trained model: the MLflow model `train` writes (a PyTorch flavour and a deployable pyfunc),
and the commands that run it on new images (`predict`) and labelled sets (`evaluate`).

`package` builds and logs the model folder, `pyfunc` is what MLflow and AzureML endpoints load,
`predictor` runs a model on decoded images (the same resize and normalisation as training),
`images` decodes what endpoints send, `responses` writes predictions in AutoML's and the labelling
API's forms, `predict` and `evaluate` are the commands. Nothing here needs DALI except the
commands' batch loading.
"""
