"""Training and export of EdgeFleet's models: reproducible builds of the int8 edge and fp32 cloud artifacts.

Needs the ``train`` extra (torch, onnx, sktime); nothing in this package runs on a device.
"""
