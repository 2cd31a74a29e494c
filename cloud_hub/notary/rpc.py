"""The in-process chain's reads, served over JSON-RPC on loopback, so that devices can check against it.

An in-process EVM lives inside the hub; a device checks its inclusion proof or a model's anchor with
``eth_call`` over HTTP. This serves the few read methods a reader needs (``eth_call``,
``eth_getCode``, ``eth_chainId``, ``net_version``, ``eth_blockNumber``, ``eth_accounts``, which is
empty) and refuses everything else: it sends no transactions. Against a real node, devices talk to
the node and this is not needed.

::

    with ChainReadServer(notary) as server:   # port 0 picks a free port
        server.url                            # http://127.0.0.1:<port>
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import BlockIdentifier

from cloud_hub.notary.chain import Web3Notary

log = logging.getLogger("edgefleet.hub.notary.rpc")

MAX_BODY_BYTES = 1 << 20
_INVALID_REQUEST, _NOT_FOUND, _INVALID_PARAMS, _PARSE_ERROR = -32600, -32601, -32602, -32700


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _block(value: object) -> BlockIdentifier:
    if value in (None, "latest", "pending", "safe", "finalized"):
        return "latest"
    if value == "earliest":
        return 0
    if isinstance(value, str) and value.startswith("0x"):
        with contextlib.suppress(ValueError):  # not hex: refused below
            return int(value, 16)
    raise _RpcError(_INVALID_PARAMS, f"not a block: {value!r}")


def _address(value: object) -> ChecksumAddress:
    if not isinstance(value, str) or not Web3.is_address(value):
        raise _RpcError(_INVALID_PARAMS, f"not an address: {value!r}")
    return Web3.to_checksum_address(value)


class ChainReadServer:
    """A threaded HTTP JSON-RPC server over one :class:`Web3Notary`'s web3 client (reads only)."""

    def __init__(self, notary: Web3Notary, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._notary = notary
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the chain read server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        w3 = self._notary.w3
        with self._notary.lock:
            if method == "eth_chainId":
                return hex(w3.eth.chain_id)
            if method == "net_version":
                return str(w3.eth.chain_id)
            if method == "eth_blockNumber":
                return hex(w3.eth.block_number)
            if method == "eth_accounts":
                return []
            if method == "eth_getCode":
                if not params:
                    raise _RpcError(_INVALID_PARAMS, "eth_getCode takes an address")
                code = w3.eth.get_code(_address(params[0]), _block(params[1] if len(params) > 1 else None))
                return "0x" + bytes(code).hex()
            if method == "eth_call":
                if not params or not isinstance(params[0], dict):
                    raise _RpcError(_INVALID_PARAMS, "eth_call takes a call object")
                call = params[0]
                data = call.get("data", call.get("input", "0x"))
                if not isinstance(data, str) or not data.startswith("0x"):
                    raise _RpcError(_INVALID_PARAMS, "a call's data is 0x-prefixed hex")
                transaction: dict[str, Any] = {"to": _address(call.get("to")), "data": data}
                if call.get("from"):
                    transaction["from"] = _address(call["from"])
                try:
                    result = w3.eth.call(transaction, _block(params[1] if len(params) > 1 else None))  # type: ignore[arg-type]
                except (ContractLogicError, TransactionFailed) as exc:
                    raise _RpcError(3, str(exc)) from exc
                return "0x" + bytes(result).hex()
        raise _RpcError(_NOT_FOUND, f"method {method} is not served (this endpoint only reads the chain)")

    def _answer(self, request: object) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": _INVALID_REQUEST, "message": "not a request"}}
        request_id = request.get("id")
        params = request.get("params", [])
        try:
            if not isinstance(params, list):
                raise _RpcError(_INVALID_PARAMS, "params are a list")
            return {"jsonrpc": "2.0", "id": request_id, "result": self._dispatch(request["method"], params)}
        except _RpcError as exc:
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": exc.code, "message": exc.message}}
        except (Web3Exception, ValueError, TypeError) as exc:
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32000, "message": str(exc)}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._reply(413, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "too large"}})
                    return
                try:
                    request = json.loads(self.rfile.read(length))
                except ValueError:
                    error = {"code": _PARSE_ERROR, "message": "bad JSON"}
                    self._reply(400, {"jsonrpc": "2.0", "id": None, "error": error})
                    return
                if isinstance(request, list):
                    self._reply(200, [server._answer(item) for item in request])
                else:
                    self._reply(200, server._answer(request))

            def _reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("rpc %s", format % args)

        return Handler

    def __enter__(self) -> Self:
        self._server = ThreadingHTTPServer((self._host, self._port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="chain-read-rpc", daemon=True)
        self._thread.start()
        log.info("chain reads served url=%s contract=%s", self.url, self._notary.address)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
