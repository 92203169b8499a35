"""CPU and memory benchmark: the Lamarr library in C, SQLamarr, in-process ONNX Runtime, ufsim served."""
