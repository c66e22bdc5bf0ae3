"""Export of Mithril models to other runtimes (``ml.export_onnx``; see docs/onnx.md)."""

from .onnx_export import DEFAULT_OPSET, OnnxExportError, export_onnx

__all__ = ["DEFAULT_OPSET", "OnnxExportError", "export_onnx"]
