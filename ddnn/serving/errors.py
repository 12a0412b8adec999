"""The one place that maps domain errors to gRPC status codes."""

from __future__ import annotations

import inspect
import logging

import grpc

from ddnn.checkpoint import CheckpointError
from ddnn.data.errors import DatasetError
from ddnn.errors import InvalidInput, NotFound, NotReady, Overloaded, PolicyError

log = logging.getLogger(__name__)


class Unauthenticated(PermissionError):
    """A control call without the credentials the service asks for (UNAUTHENTICATED)."""


class Forbidden(PermissionError):
    """A control call by a caller that may not make it, or with control disabled (PERMISSION_DENIED)."""


class Misconfigured(RuntimeError):
    """The service's own configuration cannot serve the request: not the client's fault
    (FAILED_PRECONDITION)."""


_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (Misconfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (PolicyError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CheckpointError, grpc.StatusCode.FAILED_PRECONDITION),
    (DatasetError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status code and client-facing message for an exception.

    Domain errors keep their message (it names the problem); anything else becomes INTERNAL with
    a generic message, and its traceback is logged here.
    """
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    log.error("unexpected error while serving a request", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


def status_name(code: int) -> str:
    """Name of a gRPC status code number (``3`` -> ``INVALID_ARGUMENT``)."""
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return "UNKNOWN"


def error_fields(exc: BaseException) -> tuple[int, str]:
    """(status code number, message) for an in-band ``ddnn.v1.Error``."""
    code, msg = status_for(exc)
    return code.value[0], msg


def _decoder(deserializer, where: str, max_bytes: int | None = None):
    """Deserialize one request message; an undecodable one is the client's fault (INVALID_ARGUMENT),
    one over ``max_bytes`` is RESOURCE_EXHAUSTED.

    gRPC itself would answer UNKNOWN ("Exception deserializing request") before any handler ran,
    and would fail a whole stream on one oversize message, so the interceptor takes both over
    (see :class:`ErrorMappingInterceptor`).
    """
    def decode(raw):
        if max_bytes is not None and len(raw) > max_bytes:
            raise Overloaded(f"{where}: {len(raw)} bytes exceed the message size limit of {max_bytes} bytes "
                             "(max_message_bytes)")
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception as exc:
            raise InvalidInput(f"{where}: {len(raw)} bytes that are not a valid protobuf message of this "
                               f"RPC's request type ({type(exc).__name__})") from None

    return decode


async def _decoded(raw_iterator, decode):
    async for raw in raw_iterator:
        yield decode(raw)


async def _abort_with(context, exc: Exception) -> None:
    code, msg = status_for(exc)
    await context.abort(code, msg)


def _wrap_unary(behavior, deserializer, streaming_request: bool, max_bytes: int | None):
    decode = _decoder(deserializer, "request stream message" if streaming_request else "request", max_bytes)

    async def wrapper(request, context):
        try:
            req = _decoded(request, decode) if streaming_request else decode(request)
            return await behavior(req, context)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:  # the mapping point: every other error leaves as a status code
            await _abort_with(context, exc)

    return wrapper


def _wrap_stream(behavior, deserializer, streaming_request: bool, max_bytes: int | None):
    decode = _decoder(deserializer, "request stream message" if streaming_request else "request", max_bytes)

    async def wrapper(request, context):
        try:
            req = _decoded(request, decode) if streaming_request else decode(request)
            async for item in behavior(req, context):
                yield item
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:
            await _abort_with(context, exc)

    return wrapper


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping a handler into the precise status code (see :func:`status_for`).

    It also deserializes the requests itself (the handler gets raw bytes from gRPC), so that an
    undecodable message is INVALID_ARGUMENT naming the request, not gRPC's own UNKNOWN, and an
    undecodable message mid-stream reaches the handler as an error it can finish the stream on.
    With ``max_request_bytes`` it enforces the message size limit the same way, for messages the
    transport let through (the server sets the transport's own limit higher, see
    :class:`~ddnn.serving.server.GrpcServer`).
    """

    def __init__(self, max_request_bytes: int | None = None):
        self.max_bytes = max_request_bytes

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        de, ser, mb = handler.request_deserializer, handler.response_serializer, self.max_bytes
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(handler.unary_unary, de, False, mb), None, ser)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(handler.stream_unary, de, True, mb), None, ser)
        # Streaming handlers either yield (async generators) or write through context.write and
        # return (coroutines, e.g. grpc.health.v1 Watch): each needs its own kind of wrapper.
        if handler.unary_stream:
            fn = handler.unary_stream
            wrap = _wrap_stream if inspect.isasyncgenfunction(fn) else _wrap_unary
            return grpc.unary_stream_rpc_method_handler(wrap(fn, de, False, mb), None, ser)
        fn = handler.stream_stream
        wrap = _wrap_stream if inspect.isasyncgenfunction(fn) else _wrap_unary
        return grpc.stream_stream_rpc_method_handler(wrap(fn, de, True, mb), None, ser)
