"""The one place that maps domain errors to gRPC status codes."""

from __future__ import annotations

import logging

import grpc

from ddnn.checkpoint import CheckpointError
from ddnn.data.errors import DatasetError
from ddnn.errors import InvalidInput, NotFound, NotReady, Overloaded, PolicyError

log = logging.getLogger(__name__)

_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
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


def _wrap_unary(behavior):
    async def wrapper(request, context):
        try:
            return await behavior(request, context)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:  # the mapping point: every other error leaves as a status code
            code, msg = status_for(exc)
            await context.abort(code, msg)

    return wrapper


def _wrap_stream(behavior):
    async def wrapper(request_or_iterator, context):
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:
            code, msg = status_for(exc)
            await context.abort(code, msg)

    return wrapper


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions escaping a handler into the precise status code (see :func:`status_for`)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer)
