"""The hub's federated-learning coordinator on Flower: strategies, per-update notarization, the next model.

``server_app`` is the Flower ServerApp; ``coordinator.run_federated`` its body (callable on any Grid);
``notarizing.NotarizingStrategy`` hashes, checks and notarizes each round's updates; ``global_model``
builds, quantizes and signs the next edge model; ``registry`` hands it to the model registry;
``deployment`` starts a SuperLink and SuperNodes on loopback; ``trigger`` decides when a round is due;
``runs`` and ``routes`` are the hub's side: rounds, proofs and new runs under ``/api/v1/fl``, drift → run.
"""
