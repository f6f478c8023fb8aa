"""Deployment of SpaceEvo subnets (SpaceEvo §5): quantized extraction carrying the LSQ+ quantizers
(:mod:`~nasq.deploy.quant_subnet`), ONNX QDQ INT8 export (:mod:`~nasq.deploy.onnx_export`) and TFLite
full-integer export (:mod:`~nasq.deploy.tflite_export`)."""

from nasq.deploy.quant_subnet import extract_quantized_subnet

__all__ = ["extract_quantized_subnet"]
