"""TLS 1.3 stream channels between the nodes of one deployment.

Both ends present their node certificate (mutual TLS) and OpenSSL checks that it
chains to the deployment CA; then :meth:`TrustPolicy.verify_peer` checks the rest
(node certificate shape, validity, revocation) on both ends. Peers are named by
certificate, not by DNS, so host names are never checked.

Frames travel length-prefixed (:func:`~meshdesk.wire.pack_frame`,
:class:`~meshdesk.wire.FrameDecoder`).

What a refused client sees: with TLS 1.3 the client's handshake completes before the
server has judged the client's certificate, so :func:`connect` returns a channel
and the refusal shows up on its first ``recv`` as
:class:`~meshdesk.errors.ChannelClosed` ("... closed the link before sending anything
(it may not trust our certificate)", or "... refused our certificate (TLS alert ...)"
when the alert arrives before the connection drops). A client refusing a *server*
raises :class:`~meshdesk.errors.AuthError` from :func:`connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshdesk._lifecycle import AsyncResource
from meshdesk.errors import AuthError, ChannelClosed, KitError, LinkError, WireError
from meshdesk.identity import NodeInfo, NodeKit
from meshdesk.net.trust import TrustPolicy, fingerprint
from meshdesk.wire import DEFAULT_LIMITS, Frame, FrameDecoder, WireLimits, pack_frame

__all__ = [
    "TlsChannel",
    "TlsListener",
    "client_context",
    "connect",
    "serve",
    "server_context",
]

_log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
#: After an abort, how long to let the transport report itself closed.
_ABORT_GRACE = 0.5

StrPath = str | os.PathLike[str]

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the handshake checks the chain, not the dates.
#: A reset clock must not cut a node off; expiry is checked by :class:`TrustPolicy`.
_NO_CHECK_TIME = 0x200000


# -- contexts ---------------------------------------------------------------------------


def _context(
    *, server: bool, ca_cert: x509.Certificate, cert_path: StrPath, key_path: StrPath
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # peers are named by certificate, not by DNS
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= _NO_CHECK_TIME
    ctx.load_verify_locations(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    )
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise KitError(
            f"cannot load the node certificate {cert_path} and key {key_path}: {detail}"
        ) from exc
    return ctx


def _kit_context(
    kit: NodeKit, *, server: bool, cert_path: StrPath, key_path: StrPath
) -> ssl.SSLContext:
    try:
        on_disk = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise KitError(f"cannot read the node certificate {cert_path}: {exc}") from exc
    if on_disk != kit.cert:
        raise KitError(f"{cert_path} is not the certificate of node {kit.node_id}")
    return _context(server=server, ca_cert=kit.ca_cert, cert_path=cert_path, key_path=key_path)


def server_context(kit: NodeKit, *, cert_path: StrPath, key_path: StrPath) -> ssl.SSLContext:
    """TLS 1.3 server context: our node certificate, client certificates required.

    ``cert_path``/``key_path`` are the node's PEM files (``ssl`` only loads files);
    the certificate there must be ``kit``'s.

    Raises:
        KitError: the files are unreadable, do not match, or are not ``kit``'s.
    """
    return _kit_context(kit, server=True, cert_path=cert_path, key_path=key_path)


def client_context(kit: NodeKit, *, cert_path: StrPath, key_path: StrPath) -> ssl.SSLContext:
    """TLS 1.3 client context: our node certificate, the server's required.

    Raises:
        KitError: the files are unreadable, do not match, or are not ``kit``'s.
    """
    return _kit_context(kit, server=False, cert_path=cert_path, key_path=key_path)


# -- helpers ----------------------------------------------------------------------------


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peername(writer: asyncio.StreamWriter) -> str:
    peer: Any = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return _hostport(str(peer[0]), int(peer[1]))
    return "?"


def _peer_der(writer: asyncio.StreamWriter) -> bytes:
    sslobj: Any = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        raise AuthError("the peer presented no certificate")
    return bytes(der)


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    reason = exc.reason or exc.strerror or type(exc).__name__
    return str(reason).lower().replace("_", " ")


async def _closed(writer: asyncio.StreamWriter, wait: float) -> None:
    """Wait at most ``wait`` seconds for the transport to report closed.

    ``wait_closed()`` hands out the protocol's one shared close future; a timeout
    cancelling the await would cancel that future too, and every later wait would
    raise CancelledError at once. The shield keeps the future intact.
    """
    async with asyncio.timeout(wait):
        await asyncio.shield(writer.wait_closed())


async def _abort(writer: asyncio.StreamWriter) -> None:
    """Drop the connection now and give the transport a moment to report closed."""
    writer.transport.abort()
    with contextlib.suppress(TimeoutError, OSError):
        await _closed(writer, _ABORT_GRACE)


async def _close_writer(writer: asyncio.StreamWriter, grace: float) -> None:
    """Close gracefully (flush, TLS close_notify) within ``grace`` seconds, else abort."""
    writer.close()
    try:
        await _closed(writer, grace)
    except TimeoutError:  # a dead or stubborn peer: do not wait for it
        await _abort(writer)
    except OSError:
        pass  # the connection broke while closing; it is closed all the same
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


# -- channel ----------------------------------------------------------------------------


class TlsChannel(AsyncResource):
    """A :class:`~meshdesk.net.Channel` over one TLS connection.

    Made by :func:`connect` and :class:`TlsListener` once the peer is verified.
    """

    __slots__ = (
        "_close_timeout",
        "_closed",
        "_decoder",
        "_got_any",
        "_limits",
        "_peer",
        "_peer_cert_der",
        "_pending",
        "_reader",
        "_recv_lock",
        "_remote",
        "_send_lock",
        "_shut",
        "_writer",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: NodeInfo,
        peer_cert_der: bytes,
        remote: str,
        limits: WireLimits = DEFAULT_LIMITS,
        close_timeout: float = 1.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._peer_cert_der = peer_cert_der
        self._remote = remote
        self._limits = limits
        self._close_timeout = close_timeout
        self._decoder = FrameDecoder(limits)
        self._pending: deque[Frame] = deque()
        self._send_lock = asyncio.Lock()
        self._recv_lock = asyncio.Lock()
        self._closed = False  # no more send/recv
        self._shut = False  # the transport is being or has been closed
        self._got_any = False

    @property
    def peer(self) -> NodeInfo:
        return self._peer

    @property
    def remote(self) -> str:
        return self._remote

    @property
    def peer_cert_der(self) -> bytes:
        """The peer's certificate as verified (DER), e.g. to pin or log it."""
        return self._peer_cert_der

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TlsChannel {self._peer.node_id.short} {self._remote} {state}>"

    async def send(self, frame: Frame) -> None:
        """Write one frame and wait for the transport to drain (backpressure).

        Raises:
            ChannelClosed: closed, or the connection broke while sending.
            WireError: ``frame`` breaks the wire limits (nothing is sent, the
                channel stays open).
        """
        if self._closed:
            raise ChannelClosed(f"link to {self._remote} is closed")
        data = pack_frame(frame, self._limits)
        async with self._send_lock:  # one frame at a time, whole
            if self._closed:
                raise ChannelClosed(f"link to {self._remote} is closed")
            try:
                self._writer.write(data)
                await self._writer.drain()
            except OSError as exc:
                await self._fail()
                raise ChannelClosed(self._broken_text(exc)) from exc

    async def recv(self) -> Frame:
        """Wait for the next frame.

        Raises:
            ChannelClosed: the peer hung up or refused us, or the channel was closed.
            WireError: a malformed or oversized frame; the connection is dropped first.
        """
        async with self._recv_lock:
            while True:
                if self._closed:
                    raise ChannelClosed(f"link to {self._remote} is closed")
                if self._pending:
                    self._got_any = True
                    return self._pending.popleft()
                try:
                    chunk = await self._reader.read(_CHUNK)
                except OSError as exc:
                    await self._fail()
                    raise ChannelClosed(self._broken_text(exc)) from exc
                if not chunk:
                    if self._shut:  # closed here while we were reading
                        raise ChannelClosed(f"link to {self._remote} is closed")
                    await self.aclose()
                    raise ChannelClosed(self._eof_text())
                try:
                    self._pending.extend(self._decoder.feed(chunk))
                except WireError as exc:
                    await self._fail()
                    raise WireError(f"from {self._remote}: {exc}") from exc

    def _eof_text(self) -> str:
        if self._decoder.buffered:
            return f"{self._remote} hung up in the middle of a frame"
        if not self._got_any:
            return (
                f"{self._remote} closed the link before sending anything "
                "(it may not trust our certificate)"
            )
        return f"{self._remote} closed the link"

    def _broken_text(self, exc: OSError) -> str:
        if isinstance(exc, ssl.SSLError):
            reason = _ssl_reason(exc)
            if "alert" in reason and not self._got_any:
                return f"{self._remote} refused our certificate (TLS {reason})"
            return f"TLS error on the link to {self._remote}: {reason}"
        return f"link to {self._remote} broke: {exc.strerror or exc}"

    async def abort(self) -> None:
        """Drop the connection now, without TLS close_notify; idempotent."""
        await self._fail()

    async def _fail(self) -> None:
        """Drop the connection at once: it can no longer be trusted or used."""
        self._closed = True
        if not self._shut:
            self._shut = True
            await _abort(self._writer)

    async def aclose(self) -> None:
        """Close the link: flush, TLS close_notify, then wait at most ``close_timeout``
        for the peer before dropping the connection. Idempotent.

        A ``recv`` waiting meanwhile raises ChannelClosed once the transport is down.
        """
        self._closed = True
        if self._shut:
            return
        self._shut = True
        await _close_writer(self._writer, self._close_timeout)

    async def __aenter__(self) -> TlsChannel:
        return self


# -- client -----------------------------------------------------------------------------


async def connect(
    host: str,
    port: int,
    *,
    cert_path: StrPath,
    key_path: StrPath,
    trust: TrustPolicy,
    now: Callable[[], dt.datetime],
    ca_cert: x509.Certificate | None = None,
    limits: WireLimits = DEFAULT_LIMITS,
    timeout: float,  # noqa: ASYNC109 - bounds TCP connect + handshake, not the whole call
    close_timeout: float = 1.0,
) -> TlsChannel:
    """Dial ``host:port``, do mutual TLS 1.3 and verify the server's node.

    Args:
        cert_path: Our node certificate, PEM (the node home's ``identity/node.crt``).
        key_path: Our node key, PEM (``identity/node.key``).
        trust: Judges the server's certificate after the handshake.
        now: The clock ``trust`` checks validity against.
        ca_cert: The deployment CA for OpenSSL (default: ``trust.ca_cert``).
        timeout: Seconds for TCP connect plus TLS handshake.
        close_timeout: How long the channel's ``aclose`` waits for the peer.

    Raises:
        AuthError: the server is not a node we trust (message names its
            fingerprint, when the handshake got that far, and address).
        LinkError: refused, unreachable, timed out, or the handshake failed.
        KitError: our own certificate or key files cannot be loaded.
    """
    remote = _hostport(host, port)
    ctx = _context(
        server=False,
        ca_cert=ca_cert if ca_cert is not None else trust.ca_cert,
        cert_path=cert_path,
        key_path=key_path,
    )
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ctx,
                ssl_handshake_timeout=timeout,
                ssl_shutdown_timeout=close_timeout,
            )
    except TimeoutError as exc:
        raise LinkError(f"no TLS link to {remote} within {timeout:g} s") from exc
    except ssl.SSLCertVerificationError as exc:
        raise AuthError(
            f"refusing the node at {remote}: its certificate is not of this deployment "
            f"({_ssl_reason(exc)})"
        ) from exc
    except ssl.SSLError as exc:
        raise LinkError(f"TLS handshake with {remote} failed: {_ssl_reason(exc)}") from exc
    except ConnectionRefusedError as exc:
        raise LinkError(f"{remote} refused the connection (is a node listening?)") from exc
    except OSError as exc:
        raise LinkError(f"cannot reach {remote}: {exc.strerror or exc}") from exc
    der: bytes | None = None
    try:
        der = _peer_der(writer)
        info = trust.verify_peer(der, now=now())
    except AuthError as exc:
        await _close_writer(writer, close_timeout)
        fp = "-" if der is None else fingerprint(der)
        raise AuthError(f"refusing {fp} at {remote}: {exc}") from exc
    except BaseException:
        writer.transport.abort()
        raise
    return TlsChannel(
        reader,
        writer,
        peer=info,
        peer_cert_der=der,
        remote=remote,
        limits=limits,
        close_timeout=close_timeout,
    )


# -- server -----------------------------------------------------------------------------


class _UpgradingProtocol(asyncio.StreamReaderProtocol):
    """Stream protocol for connections upgraded to TLS by ``start_tls``.

    The stock protocol learns that it runs over TLS only once ``start_tls`` returns;
    a peer that hangs up right after the handshake lands before that, and asyncio
    then logs a spurious warning. Every connection here is TLS or is dropped, so an
    EOF never keeps the transport half-open.
    """

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


#: ``on_refused(fingerprint or "-", address, reason)``
RefusedHook = Callable[[str, str, str], None]
ChannelHandler = Callable[[TlsChannel], Awaitable[None]]


class TlsListener(AsyncResource):
    """Accepts TLS links; one task per connection, all owned and closed here.

    Each accepted connection gets ``handshake_timeout`` seconds for its TLS
    handshake; then the client's node is verified with ``trust``. A verified
    channel is handed to ``on_channel``, which owns it for the life of the
    connection: when ``on_channel`` returns (or raises) the channel is closed.
    Everything refused (no handshake, not TLS, a foreign or revoked certificate)
    is reported through ``on_refused(fingerprint or "-", address, reason)``; the
    fingerprint is known only when the handshake completed, since OpenSSL does not
    reveal a certificate it rejected.

    Use as ``async with TlsListener(...) as listener`` (or ``await serve(...)``);
    ``aclose()`` stops accepting and closes every connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cert_path: StrPath,
        key_path: StrPath,
        trust: TrustPolicy,
        now: Callable[[], dt.datetime],
        on_channel: ChannelHandler,
        on_refused: RefusedHook,
        ca_cert: x509.Certificate | None = None,
        limits: WireLimits = DEFAULT_LIMITS,
        handshake_timeout: float = 5.0,
        close_timeout: float = 1.0,
    ) -> None:
        self._host = host
        self._port = port
        self._cert_path = cert_path
        self._key_path = key_path
        self._ca_cert = ca_cert if ca_cert is not None else trust.ca_cert
        self._trust = trust
        self._now = now
        self._on_channel = on_channel
        self._on_refused = on_refused
        self._limits = limits
        self._handshake_timeout = handshake_timeout
        self._close_timeout = close_timeout
        self._state = _State.NEW
        self._ctx: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels: set[TlsChannel] = set()

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the listener is not running")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return _hostport(self._host, self.port)

    @property
    def channels(self) -> frozenset[TlsChannel]:
        """Verified connections currently open."""
        return frozenset(self._channels)

    async def start(self) -> None:
        """Bind and start accepting; returns once the port is bound.

        Raises:
            LinkError: the address cannot be bound.
            KitError: our certificate or key files cannot be loaded.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"listener is {self._state.value}; it cannot start again")
        self._ctx = _context(
            server=True,
            ca_cert=self._ca_cert,
            cert_path=self._cert_path,
            key_path=self._key_path,
        )
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return _UpgradingProtocol(asyncio.StreamReader(loop=loop), self._accepted, loop=loop)

        try:
            self._server = await loop.create_server(protocol, self._host, self._port)
        except OSError as exc:
            where = _hostport(self._host, self._port)
            raise LinkError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        self._state = _State.RUNNING

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._state is not _State.RUNNING:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve_one(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("connection task failed", exc_info=exc)

    def _refuse(self, fp: str, remote: str, reason: str) -> None:
        try:
            self._on_refused(fp, remote, reason)
        except Exception:
            _log.exception("on_refused hook failed for %s", remote)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = _peername(writer)
        try:
            channel = await self._handshake(reader, writer, remote)
        except BaseException:
            writer.transport.abort()
            raise
        if channel is None:
            return
        self._channels.add(channel)
        try:
            await self._on_channel(channel)
        except Exception:
            _log.exception("the handler of the link from %s failed", remote)
        finally:
            self._channels.discard(channel)
            await channel.aclose()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str
    ) -> TlsChannel | None:
        assert self._ctx is not None
        limit = self._handshake_timeout
        try:
            async with asyncio.timeout(limit):
                # The ssl layer's own limit is a backstop; ours fires first.
                await writer.start_tls(self._ctx, ssl_handshake_timeout=limit + 1.0)
        except TimeoutError:
            reason = f"no TLS handshake within {limit:g} s"
        except ssl.SSLCertVerificationError as exc:
            reason = f"certificate not of this deployment ({_ssl_reason(exc)})"
        except ssl.SSLError as exc:
            reason = f"TLS handshake failed ({_ssl_reason(exc)})"
        except (OSError, EOFError) as exc:
            reason = f"connection lost during the TLS handshake ({str(exc) or type(exc).__name__})"
        else:
            reason = ""
        if reason:
            # A failed start_tls has closed the TCP transport already.
            writer.transport.abort()
            self._refuse("-", remote, reason)
            return None
        der: bytes | None = None
        try:
            der = _peer_der(writer)
            info = self._trust.verify_peer(der, now=self._now())
        except AuthError as exc:
            self._refuse("-" if der is None else fingerprint(der), remote, str(exc))
            await _close_writer(writer, self._close_timeout)
            return None
        return TlsChannel(
            reader,
            writer,
            peer=info,
            peer_cert_der=der,
            remote=remote,
            limits=self._limits,
            close_timeout=self._close_timeout,
        )

    async def aclose(self) -> None:
        """Stop accepting, close every connection, wait for their tasks. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._server is not None:
            self._server.close()
        # Close verified links first, so handlers see ChannelClosed and return.
        channels = list(self._channels)
        if channels:
            await asyncio.gather(*(ch.aclose() for ch in channels))
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._close_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let transports finish closing their sockets

    async def __aenter__(self) -> TlsListener:
        if self._state is _State.NEW:
            await self.start()
        return self


async def serve(
    host: str,
    port: int,
    *,
    cert_path: StrPath,
    key_path: StrPath,
    trust: TrustPolicy,
    now: Callable[[], dt.datetime],
    on_channel: ChannelHandler,
    on_refused: RefusedHook,
    ca_cert: x509.Certificate | None = None,
    limits: WireLimits = DEFAULT_LIMITS,
    handshake_timeout: float = 5.0,
    close_timeout: float = 1.0,
) -> TlsListener:
    """Start a :class:`TlsListener` on ``host:port`` (port 0: any free port).

    The caller owns the result: ``await listener.aclose()`` or ``async with``.
    """
    listener = TlsListener(
        host,
        port,
        cert_path=cert_path,
        key_path=key_path,
        trust=trust,
        now=now,
        on_channel=on_channel,
        on_refused=on_refused,
        ca_cert=ca_cert,
        limits=limits,
        handshake_timeout=handshake_timeout,
        close_timeout=close_timeout,
    )
    await listener.start()
    return listener
