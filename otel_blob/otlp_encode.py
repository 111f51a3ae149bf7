"""A faster OTLP encoding of log records: the same bytes as the exporter's, ~4x cheaper.

The OTLP exporters build a protobuf object per record and per attribute
(``_encode_attributes`` -> ``KeyValue(key, AnyValue(...))``): ~30 µs a blob file
record, the largest single cost of exporting one event. Our records repeat the
same keys and mostly the same string values (event name, DB path, column family,
reason, status, session id), so this module writes the wire format directly and
keeps the encoded ``KeyValue`` of repeated string attributes.

:func:`encode_logs` returns the serialized ``ExportLogsServiceRequest``; the
suite checks it is byte-for-byte what ``encode_logs(batch).SerializeToString()``
of opentelemetry-exporter-otlp gives (tests/test_otlp_encode.py). Values that are
not a str, bool, int or float (lists, dicts, bytes, None) are encoded by the
exporter's own ``_encode_value``, so nothing is approximated.

:class:`FastOTLPLogExporter` is the gRPC log exporter with this encoding.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence

__all__ = ["FastOTLPLogExporter", "encode_logs"]

_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_KV_CACHE_MAX = 8192


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


class _Encoder:
    """Caches of one exporter: encoded KeyValues of repeated string attributes,
    encoded resources and scopes."""

    def __init__(self) -> None:
        self._kv: dict[tuple[str, str], bytes] = {}
        self._keys: dict[str, bytes] = {}
        self._messages: dict[int, tuple[Any, bytes]] = {}  # id(resource/scope) -> (it, bytes)

    def key_value(self, key: str, value: Any) -> bytes:
        """A ``KeyValue`` (without its field tag)."""
        t = type(value)
        if t is str:
            kv = self._kv.get((key, value))
            if kv is not None:
                return kv
            av = _ld(b"\x0a", value.encode("utf-8"))
        elif t is bool:
            av = b"\x10\x01" if value else b"\x10\x00"
        elif t is int and -(1 << 63) <= value < (1 << 63):
            av = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
        elif t is float:
            av = b"\x21" + _pack_d(value)
        else:
            from opentelemetry.exporter.otlp.proto.common._internal import _encode_value

            av = _encode_value(value).SerializeToString()
        kb = self._keys.get(key)
        if kb is None:
            kb = self._keys[key] = _ld(b"\x0a", key.encode("utf-8"))
        kv = kb + _ld(b"\x12", av)
        if t is str and len(self._kv) < _KV_CACHE_MAX:
            self._kv[(key, value)] = kv
        return kv

    def _message(self, obj: Any, encode: Any) -> bytes:
        # Resources and scopes are few and immutable: encoded once (kept alive with
        # their bytes, so an id is never reused while cached).
        hit = self._messages.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        data = encode(obj).SerializeToString()
        if len(self._messages) < 256:
            self._messages[id(obj)] = (obj, data)
        return data

    def log_record(self, readable: Any) -> bytes:
        """A ``LogRecord`` message (without its field tag), fields in number order."""
        from opentelemetry.exporter.otlp.proto.common._internal import _encode_value

        r = readable.log_record
        out = []
        if r.timestamp:
            out.append(b"\x09" + _pack_q(r.timestamp))  # 1 time_unix_nano, fixed64
        sev = getattr(r.severity_number, "value", None)
        if sev:
            out.append(b"\x10" + _varint(sev))  # 2 severity_number
        if r.severity_text:
            out.append(_ld(b"\x1a", r.severity_text.encode("utf-8")))  # 3 severity_text
        body = r.body
        if type(body) is str:
            out.append(_ld(b"\x2a", _ld(b"\x0a", body.encode("utf-8"))))  # 5 body
        else:
            out.append(_ld(b"\x2a", _encode_value(body).SerializeToString()))
        attrs = r.attributes
        if attrs:
            kv = self.key_value
            out.extend([_ld(b"\x32", kv(k, v)) for k, v in attrs.items()])  # 6 attributes
        dropped = readable.dropped_attributes
        if dropped:
            out.append(b"\x38" + _varint(dropped))  # 7 dropped_attributes_count
        flags = int(r.trace_flags) if r.trace_flags is not None else 0
        if flags:
            out.append(b"\x45" + _pack_i(flags))  # 8 flags, fixed32
        if r.trace_id:
            out.append(b"\x4a\x10" + r.trace_id.to_bytes(16, "big"))  # 9 trace_id
        if r.span_id:
            out.append(b"\x52\x08" + r.span_id.to_bytes(8, "big"))  # 10 span_id
        if r.observed_timestamp:
            out.append(b"\x59" + _pack_q(r.observed_timestamp))  # 11 observed_time_unix_nano, fixed64
        if r.event_name:
            out.append(_ld(b"\x62", r.event_name.encode("utf-8")))  # 12 event_name
        return b"".join(out)

    def request(self, batch: Sequence[Any]) -> bytes:
        """``ExportLogsServiceRequest``: records grouped by resource, then scope, in first-seen order."""
        from opentelemetry.exporter.otlp.proto.common._internal import (
            _encode_instrumentation_scope,
            _encode_resource,
        )

        groups: dict[Any, dict[Any, list[bytes]]] = {}
        last_res: Any = object()
        last_scope: Any = object()
        records: list[bytes] = []
        for readable in batch:
            # Grouped as the exporter groups them (by equal resource, then scope);
            # hashing a Resource serializes it, so a run of the same objects skips that.
            res, scope = readable.resource, readable.instrumentation_scope or None
            if res is not last_res or scope is not last_scope:
                records = groups.setdefault(res, {}).setdefault(scope, [])
                last_res, last_scope = res, scope
            records.append(_ld(b"\x12", self.log_record(readable)))
        parts = []
        for resource, scopes in groups.items():
            scope_parts = []
            for scope, records in scopes.items():
                body = _ld(b"\x0a", self._message(scope, _encode_instrumentation_scope)) if scope is not None \
                    else b"\x0a\x00"
                body += b"".join(records)
                if scope is not None and scope.schema_url:
                    body += _ld(b"\x1a", scope.schema_url.encode("utf-8"))
                scope_parts.append(_ld(b"\x12", body))
            body = _ld(b"\x0a", self._message(resource, _encode_resource)) + b"".join(scope_parts)
            if resource.schema_url:
                body += _ld(b"\x1a", resource.schema_url.encode("utf-8"))
            parts.append(_ld(b"\x0a", body))
        return b"".join(parts)


def encode_logs(batch: Sequence[Any], encoder: _Encoder | None = None) -> bytes:
    """The serialized ``ExportLogsServiceRequest`` of ``batch`` (ReadableLogRecords)."""
    return (encoder or _Encoder()).request(batch)


def _fast_grpc_exporter_class() -> type:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    class FastOTLPLogExporter(OTLPLogExporter):  # type: ignore[misc]
        """OTLP/gRPC log exporter with :func:`encode_logs` (same bytes, ~4x less CPU)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._fast = _Encoder()

        def _translate_data(self, data: Sequence[Any]) -> Any:
            # gRPC's stub wants a message: parsing our bytes is done in C (upb).
            return ExportLogsServiceRequest.FromString(self._fast.request(data))

    return FastOTLPLogExporter


def __getattr__(name: str) -> Any:
    if name == "FastOTLPLogExporter":  # imported lazily: gRPC is heavy
        cls = _fast_grpc_exporter_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
