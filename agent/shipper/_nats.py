"""NATS JetStream: a PubAck is the confirmation; ``Nats-Msg-Id`` lets the stream drop resends."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING, Final

from agent.shipper._result import Outcome, SendResult, clip
from weightwarden.errors import ConfigError
from weightwarden.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.aio.client import Client as NatsClient
    from nats.js import JetStreamContext

    from weightwarden.batch import Batch

__all__ = ["NatsTransport"]

log = get_logger("agent.shipper")

_SUBJECT_TOKEN: Final = re.compile(r"[^A-Za-z0-9_-]")
_JS_MSG_SIZE_ERR: Final = 10054
"""JetStream's error code for a message over the stream's ``max_msg_size``."""
_JS_UNAVAILABLE: Final = 503


class NatsTransport:
    """JetStream publish; a PubAck (the stream stored the message) confirms a batch.

    Each batch is published to ``{subject_prefix}.{agent}`` (the agent id with every
    character outside ``[A-Za-z0-9_-]`` replaced by ``_``) with the headers
    ``Nats-Msg-Id: {agent_id}:{first_seq}-{last_seq}`` and ``Nats-Expected-Stream:
    {stream}``: within the stream's duplicate window (2 minutes by default) a resend of
    the same events is dropped by JetStream (the PubAck says ``duplicate``); after it,
    the collector's own (agent, seq) de-duplication takes over.

    The asyncio loop and the connection are created by the first :meth:`send`, in the
    calling thread (the shipper's), and closed by :meth:`close` in that thread.

    Args:
        servers: NATS URLs (``nats://127.0.0.1:4222``), one string or several.
        stream: The JetStream stream that must store the batches (it must exist and
            listen on ``{subject_prefix}.>``).
        subject_prefix: Subject prefix of agent batches.
        timeout: Seconds to wait for the PubAck.
        connect_timeout: Seconds to wait for a connection.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        stream: str,
        subject_prefix: str = "weightwarden.batches",
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        if not self.servers:
            raise ConfigError("collector NATS servers: name at least one nats:// URL")
        if not stream or _SUBJECT_TOKEN.search(stream):
            raise ConfigError(f"NATS stream name {stream!r} must be letters, digits, - or _")
        prefix = subject_prefix.strip(".")
        if not prefix or any(c in prefix for c in " *>\t\r\n"):
            raise ConfigError(
                f"NATS subject prefix {subject_prefix!r} must be dot-separated tokens "
                "without wildcards or spaces"
            )
        self.stream = stream
        self.subject_prefix = prefix
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: NatsClient | None = None
        self._js: JetStreamContext | None = None

    def subject_for(self, agent_id: str) -> str:
        """The subject an agent's batches are published to."""
        return f"{self.subject_prefix}.{_SUBJECT_TOKEN.sub('_', agent_id)}"

    @staticmethod
    def message_id(batch: Batch) -> str:
        """``{agent_id}:{first_seq}-{last_seq}``: the same events give the same id."""
        return f"{batch.agent_id}:{batch.first_seq}-{batch.last_seq}"

    def send(self, batch: Batch, body: bytes) -> SendResult:
        """Publish the signed batch and wait for the stream's PubAck."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._publish(batch, body))

    async def _jetstream(self) -> JetStreamContext:
        client = self._client
        if client is not None and client.is_connected and self._js is not None:
            return self._js
        await self._drop_client()
        import nats  # noqa: PLC0415 -- 170 ms of imports an HTTP-only agent never needs

        async def on_error(exc: Exception) -> None:
            log.debug("nats connection error", error=clip(str(exc)) or type(exc).__name__)

        # No background reconnects: a lost connection fails the attempt, the shipper
        # backs off, and the next attempt connects afresh (to any server in the list).
        client = await asyncio.wait_for(
            nats.connect(
                servers=self.servers,
                connect_timeout=max(1, round(self.connect_timeout)),
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=on_error,
                name="weightwarden-agent",
            ),
            timeout=self.connect_timeout * (len(self.servers) * 2 + 1),
        )
        self._client = client
        self._js = client.jetstream(timeout=self.timeout)
        return self._js

    async def _drop_client(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=self.connect_timeout)

    async def _publish(self, batch: Batch, body: bytes) -> SendResult:  # noqa: PLR0911 -- one return per failure class
        import nats.errors  # noqa: PLC0415 -- see _jetstream
        import nats.js.errors  # noqa: PLC0415 -- see _jetstream

        subject = self.subject_for(batch.agent_id)
        try:
            js = await self._jetstream()
            ack = await js.publish(
                subject,
                body,
                timeout=self.timeout,
                stream=self.stream,
                headers={"Nats-Msg-Id": self.message_id(batch)},
            )
        except nats.errors.MaxPayloadError as exc:
            return SendResult(outcome=Outcome.TOO_LARGE, detail=f"NATS max payload: {exc}")
        except nats.js.errors.NoStreamResponseError:
            return SendResult(
                outcome=Outcome.RETRY,
                detail=f"no JetStream stream answers on {subject} (is stream {self.stream} "
                "created and listening on it?)",
            )
        except nats.js.errors.APIError as exc:
            detail = f"JetStream refused the batch: {exc}"
            if exc.err_code == _JS_MSG_SIZE_ERR:
                return SendResult(outcome=Outcome.TOO_LARGE, detail=detail)
            if exc.code == _JS_UNAVAILABLE or exc.code is None:
                return SendResult(outcome=Outcome.RETRY, detail=detail)
            return SendResult(outcome=Outcome.REFUSED, status=exc.code, detail=detail)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            await self._drop_client()
            what = clip(str(exc)) or type(exc).__name__
            return SendResult(
                outcome=Outcome.RETRY,
                detail=f"cannot publish to NATS {','.join(self.servers)}: {what}",
            )
        if ack.stream != self.stream:
            return SendResult(
                outcome=Outcome.REFUSED,
                detail=f"stream {ack.stream} stored the batch, not {self.stream}",
            )
        count = len(batch.events)
        return SendResult(
            outcome=Outcome.STORED,
            acked_seq=batch.last_seq,
            stored=0 if ack.duplicate else count,
            duplicates=count if ack.duplicate else 0,
        )

    def close(self) -> None:
        """Close the connection and the loop (from the thread that sent)."""
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        try:
            loop.run_until_complete(self._drop_client())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
