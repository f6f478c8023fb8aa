"""Weight quantization and model size (JASQ §3.4): bucketed quantizer, Huffman coding, size, export."""

from nasq.quant.bucket import QuantizedTensor, dequantize, quantize_dequantize, quantize_symbols
from nasq.quant.size import SizeReport, quantize_with_size, size_report

__all__ = [
    "QuantizedTensor",
    "quantize_symbols",
    "dequantize",
    "quantize_dequantize",
    "SizeReport",
    "size_report",
    "quantize_with_size",
]
