"""Reading and writing Mithril data without pickle: parameter files in the safetensors format.

>>> from mithril.io import save_params, load_params, read_metadata, ParamsFileError
"""

from .params import ParamsFileError, load_params, read_metadata, save_params

__all__ = ["ParamsFileError", "load_params", "read_metadata", "save_params"]
