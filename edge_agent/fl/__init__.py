"""The federated-learning client beside the agent: local head training without torch, signed updates.

``dataset``, ``head``, ``embedding`` and ``client`` need numpy and ONNX Runtime only; ``client_app`` is the
Flower ClientApp (the ``edge-fl`` extra) that a SuperNode runs.
"""
