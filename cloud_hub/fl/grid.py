"""An in-process Grid: the ServerApp's strategies talk to ClientApp handlers called directly.

For unit tests and benchmarks that run Flower's real strategies on real Messages without a SuperLink
(and without Ray). Each node is a function from the hub's message to the node's reply; a handler that
raises makes an error reply, as a failing ClientApp does on the deployment engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

NodeHandler = Callable[[Message], Message]


class InProcessGrid(Grid):
    def __init__(self, nodes: dict[int, NodeHandler], *, run_id: int = 1) -> None:
        self.nodes = dict(nodes)
        self._run = Run.create_empty(run_id)
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        # Messages take their sender from the process's task identity, as in a ServerApp process.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = f"m{next(self._ids)}"
            message.metadata.__dict__["_message_id"] = message_id
            message.metadata.__dict__["_run_id"] = self._run.run_id
            handler = self.nodes[message.metadata.dst_node_id]
            try:
                reply = handler(message)
            except Exception as exc:  # a failing ClientApp answers with an error message
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(message_id) for message_id in message_ids if message_id in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
