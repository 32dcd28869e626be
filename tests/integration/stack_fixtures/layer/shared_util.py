"""A layer module: importable by every fixture handler only if the layer is on PYTHONPATH."""


def describe() -> str:
    return "layer-ok"
