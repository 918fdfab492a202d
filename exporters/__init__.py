"""Exporters: AMPLIFY models as ONNX / TorchScript graphs, a Triton model repository, and a light
runtime that serves them on numpy arrays.

    amplify export --format onnx --model amplify.pt --out exported/     # see docs/exporters.md
    from exporters.runtime import load_exported                         # no torch needed for ONNX

Importing this package imports nothing heavy; ``exporters.export`` holds the exporter itself.
"""
