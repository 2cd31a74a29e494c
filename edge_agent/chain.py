"""The device's view of the notary: read the chain over JSON-RPC and check proofs, without web3.

A device receives an :class:`~protocol.notary.InclusionProof` after a federated round and a model's
id and sha256 before it loads a new model. :class:`ChainReader` asks any Ethereum JSON-RPC endpoint
(``eth_call``, standard library only) for the round's committed root or the model's anchored hash and
checks them with :mod:`protocol.merkle`. The calldata and the decoding of the answers are in
:mod:`protocol.notary`.

::

    reader = ChainReader("http://10.0.0.1:8545", "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    record = await reader.check_inclusion(proof)       # raises NotarizationError unless included
    await reader.check_model("plaid-edge-int8@3", sha256_of_artifact)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from typing import Any

from edge_agent.errors import AgentError
from protocol.merkle import MerkleError
from protocol.notary import (
    InclusionProof,
    NotaryAbiError,
    RoundRecord,
    check_address,
    decode_bool,
    decode_get_round,
    decode_model_anchor,
    encode_get_round,
    encode_model_anchor,
    encode_verify_inclusion,
)

MAX_ANSWER_BYTES = 1 << 20


class ChainReadError(AgentError):
    """The chain's JSON-RPC endpoint could not be reached or gave an answer that makes no sense."""


class NotarizationError(AgentError):
    """The chain does not vouch for what was checked: a round, a proof or a model hash."""


class ChainReader:
    """Read-only access to the notary contract through one JSON-RPC endpoint.

    The blocking methods run on the caller's thread; the ``async`` ones run them in a worker thread.
    """

    def __init__(self, url: str, contract_address: str, *, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the chain URL is an http(s) JSON-RPC endpoint, not {url!r}")
        self.url = url
        self.contract_address = check_address(contract_address)
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)

    def request(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC request; the ``result``, or ChainReadError."""
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()
        http_request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout_s) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise ChainReadError(f"{method}: the node answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ChainReadError(f"{method}: cannot reach {self.url}: {exc}") from exc
        if len(raw) > MAX_ANSWER_BYTES:
            raise ChainReadError(f"{method}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise ChainReadError(f"{method}: the answer is not JSON") from exc
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise ChainReadError(f"{method}: the answer is not a JSON-RPC response to this request")
        if "error" in answer:
            error = answer["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ChainReadError(f"{method}: the node refused: {message}")
        return answer.get("result")

    def call(self, data: bytes) -> bytes:
        """``eth_call`` of the contract at the latest block."""
        result = self.request("eth_call", [{"to": self.contract_address, "data": "0x" + data.hex()}, "latest"])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainReadError(f"eth_call returned {result!r}, not hex data")
        try:
            return bytes.fromhex(result[2:])
        except ValueError as exc:
            raise ChainReadError("eth_call returned malformed hex") from exc

    def get_round(self, round_id: int) -> RoundRecord | None:
        """The committed round, or None."""
        try:
            return decode_get_round(round_id, self.call(encode_get_round(round_id)))
        except NotaryAbiError as exc:
            raise ChainReadError(f"reading round {round_id}: {exc}") from exc

    def model_anchor(self, model_id: str) -> bytes | None:
        """The sha256 anchored for ``model_id``, or None."""
        try:
            anchor = decode_model_anchor(model_id, self.call(encode_model_anchor(model_id)))
        except NotaryAbiError as exc:
            raise ChainReadError(f"reading the anchor of {model_id}: {exc}") from exc
        return None if anchor is None else anchor.digest

    def contract_verifies(self, proof: InclusionProof) -> bool:
        """The contract's own answer (its ``verify_inclusion``) for the proof."""
        try:
            return decode_bool(self.call(encode_verify_inclusion(proof.round_id, proof.leaf, proof.proof)))
        except NotaryAbiError as exc:
            raise ChainReadError(f"verifying on chain: {exc}") from exc

    def verify_inclusion(self, proof: InclusionProof) -> RoundRecord:
        """The round's record, once the proof is checked here against the chain's root and model hash."""
        committed = self.get_round(proof.round_id)
        if committed is None:
            raise NotarizationError(f"round {proof.round_id} is not committed on chain {self.contract_address}")
        try:
            proof.check(committed)
        except MerkleError as exc:
            raise NotarizationError(str(exc)) from exc
        return committed

    def verify_model(self, model_id: str, sha256: bytes) -> None:
        """Raise NotarizationError unless ``sha256`` is the hash anchored on chain for ``model_id``."""
        anchored = self.model_anchor(model_id)
        if anchored is None:
            raise NotarizationError(f"model {model_id} is not anchored on chain")
        if anchored != sha256:
            raise NotarizationError(
                f"model {model_id}: sha256 {sha256.hex()} differs from the anchored {anchored.hex()}"
            )

    async def check_inclusion(self, proof: InclusionProof) -> RoundRecord:
        return await asyncio.to_thread(self.verify_inclusion, proof)

    async def check_model(self, model_id: str, sha256: bytes) -> None:
        await asyncio.to_thread(self.verify_model, model_id, sha256)
