"""Redirects answered inside uvicorn's HTTP protocol, before any ASGI request exists.

``fanout serve`` hands uvicorn :class:`RedirectHttpProtocol` (``http=``). When the request
headers are in and the request is a ``GET``/``HEAD`` of a code whose answer this process has
cached (:meth:`RedirectApp.answer_cached`), the response is written to the socket from here: no
request-response cycle, no task, no ASGI messages — the per-request machinery that costs
uvicorn most of its time on a redirect; one that must wait for the store is answered from
here once resolved (below). Anything else goes through uvicorn unchanged, and so through ASGI,
where :class:`RedirectApp` answers redirects this path leaves to it with the same code.

Answers are written when the loop iteration that made them ends (``Flush``), all of them in a
row: written one by one between the parsing of the next requests, each write woke the load
generator's sleeping thread again, and the write was half of the loop's time. Before uvicorn
handles anything of a connection (a request it answers, a bad request, a shutdown, the
client's end of stream), that connection's answers are written, so they keep their order.

An idle connection is closed after uvicorn's keep-alive timeout, but by one timer per connection
instead of uvicorn's one per response (armed, then cancelled by the next request: ~5 % of the
loop at 30 000 redirects/s): armed by an answer made here and not already running, it closes
the connection if nothing was read since it was armed and no request is in flight, else waits
once more. So a connection closes between one and two timeouts after it fell silent.

A redirect this process cannot answer at once (a code not cached here, a visit of a limited
link, a full click queue) is answered from here too, once resolved: a task of this protocol's
stands in for uvicorn's request cycle meanwhile, so uvicorn queues whatever the client sends
behind it as behind any request in flight, and starts it when the answer is written. A failed
resolution answers 500 and closes the connection, as uvicorn does for an app's exception.

A request takes uvicorn's path whenever this one could change what a client sees: another
response of the connection still in flight or queued (pipelined answers keep their order), a
congested socket (uvicorn waits for it to drain), a request that is not keep-alive HTTP/1.1,
has a body or asks for an upgrade, a percent-encoded path, a concurrency limit set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from fanout.api.redirect import RedirectApp, Response
from fanout.api.websocket_loop import Flush

if TYPE_CHECKING:
    from fanout.bootstrap import Platform

__all__ = ["RedirectHttpProtocol"]

log = logging.getLogger(__name__)

_FAILED = (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n"
    b"\r\nInternal Server Error"
)


class _Resolving:
    """Stands in for uvicorn's request cycle while a redirect is resolved: uvicorn queues
    what the connection sends next behind it, and a shutdown asks it not to keep alive."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = asyncio.Event()  # never awaited: uvicorn only sets it when the client goes

    def __init__(self) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = True


class RedirectHttpProtocol(HttpToolsProtocol):
    redirects: ClassVar[RedirectApp | None] = None  # set on the class :meth:`serving` makes
    _answered = False  # this request was answered here: the parser's last callback is ours
    # uvicorn's default headers (date, server), encoded once per list: it replaces the list
    # when the date changes, once a second.
    _defaults: ClassVar[tuple[object, bytes]] = (None, b"")
    _unsent: list[bytes] | None = None  # answers made in this loop iteration, not yet written
    _flush: Flush
    _reads = 0  # data_received calls so far: the idle timer's sign of life
    _idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # uvicorn's signature: its transport, not a base one
        self._flush = Flush.of(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        super().data_received(data)

    @classmethod
    def serving(cls, redirects: RedirectApp) -> type[RedirectHttpProtocol]:
        """The protocol class to give uvicorn for an app whose redirect front is ``redirects``."""
        return type(cls.__name__, (cls,), {"redirects": redirects})

    def on_headers_complete(self) -> None:
        if not self._answer():
            self.flush()  # what this connection was answered goes before what uvicorn writes
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()

    def _answer(self) -> bool:
        """Answer the request from this process's cache if it can; whether it did."""
        redirects, cycle, parser = self.redirects, self.cycle, self.parser
        if (
            redirects is None
            or (cycle is not None and not cycle.response_complete)
            or self.pipeline
            or self.flow.write_paused
            or self.limit_concurrency is not None
            or parser.should_upgrade()
            or not parser.should_keep_alive()
            or parser.get_http_version() != "1.1"
        ):
            return False
        raw_path, _, query = self.url.partition(b"?")
        if b"%" in raw_path or b"#" in query:
            return False
        method = parser.get_method().decode("latin-1")
        code = redirects.code_of(method, raw_path.decode("latin-1"))
        if code is None:
            return False
        for name, _ in self.headers:
            if name == b"content-length" or name == b"transfer-encoding":
                return False  # a body: uvicorn reads it
        scope = self.scope  # the headers and client uvicorn collected; what a click needs
        scope["method"] = method
        scope["query_string"] = query
        head = method == "HEAD"
        try:
            response = redirects.answer_cached(scope, code, head)
        except Exception:  # a store that failed: the ASGI path tries again, and reports it
            return False
        if response is None:
            platform = redirects.platform()
            if platform is None:
                return False
            self._answered = True
            self._resolve(platform, scope, code, head)
            return True
        self._answered = True
        self._queue(self._encode(response, head))
        self.server_state.total_requests += 1  # as uvicorn counts a response
        if self._idle is None:
            self._arm_idle()
        return True

    def _queue(self, answer: bytes) -> None:
        """Write ``answer`` when this loop iteration ends, after those queued before it."""
        if self._unsent is None:
            self._unsent = [answer]
            self._flush.soon(self)
        else:  # pipelined requests answered in the same read
            self._unsent.append(answer)

    def _arm_idle(self) -> None:
        self._idle = self.loop.call_later(self.timeout_keep_alive, self._idle_check, self._reads)

    def _resolve(self, platform: Platform, scope: Mapping[str, Any], code: str, head: bool) -> None:
        """Answer this request once ``code`` is resolved, in a task standing for its cycle."""
        resolving = _Resolving()
        self.cycle = resolving  # type: ignore[assignment]  # what uvicorn reads of a cycle
        task = self.loop.create_task(self._answer_later(resolving, platform, scope, code, head))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)  # a graceful shutdown waits for it

    async def _answer_later(
        self,
        resolving: _Resolving,
        platform: Platform,
        scope: Mapping[str, Any],
        code: str,
        head: bool,
    ) -> None:
        redirects = self.redirects
        assert redirects is not None
        click = None
        try:
            response, click = await redirects.answer_resolved(platform, scope, code, head)
            answer = self._encode(response, head)
        except Exception:
            log.exception("resolving redirect %r failed", code)
            answer = b"".join((STATUS_LINE[500], self._default_headers(), _FAILED))
            resolving.keep_alive = False
        resolving.response_complete = True
        if not self.transport.is_closing():
            self._queue(answer)
            if self.pipeline or not resolving.keep_alive:
                self.flush()  # before uvicorn starts the next request, or the close
            if resolving.keep_alive:
                self.on_response_complete()  # reading resumed, the next request started
            else:
                self.transport.close()
        if click is not None:  # the sink may make it wait for room: after answering
            await platform.click_sink.add(click)

    def _idle_check(self, reads: int) -> None:
        """Close the connection if it stayed silent since ``reads`` with nothing in flight."""
        self._idle = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if reads != self._reads or self.pipeline or (cycle and not cycle.response_complete):
            self._arm_idle()
        else:
            self.flush()
            self.transport.close()

    def flush(self) -> None:
        """Write the answers made since the last flush (the loop's ``Flush`` calls it)."""
        unsent, self._unsent = self._unsent, None
        if unsent and not self.transport.is_closing():
            self.transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def send_400_response(self, msg: str) -> None:
        self.flush()
        super().send_400_response(msg)

    def shutdown(self) -> None:
        self.flush()
        super().shutdown()

    def eof_received(self) -> None:
        # The transport closes itself after this, maybe in the read that made the answers.
        self.flush()
        super().eof_received()

    def _encode(self, response: Response, head: bool) -> bytes:
        status, defaults = STATUS_LINE[response.status], self._default_headers()
        return b"".join((status, defaults, response.lines, b"\r\n", b"" if head else response.body))

    def _default_headers(self) -> bytes:
        headers = self.server_state.default_headers
        seen, encoded = self._defaults
        if seen is not headers:
            encoded = b"".join(b"%s: %s\r\n" % pair for pair in headers)
            type(self)._defaults = (headers, encoded)
        return encoded
