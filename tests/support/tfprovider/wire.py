"""The few protocol-buffers encodings the provider answers with (proto3 wire format).

Fields are written in order, defaults left out, as any protobuf encoder does; nothing
here decodes, because every request the provider reads is either empty or ignored.
"""

from __future__ import annotations

VARINT = 0
LEN = 2


def _varint(value: int) -> bytes:
    if value < 0:  # int64 negatives are ten bytes of two's complement
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def integer(field: int, value: int) -> bytes:
    """int64, bool and enum fields (0 and False are the default: not written)."""
    return _tag(field, VARINT) + _varint(int(value)) if value else b""


def raw(field: int, value: bytes) -> bytes:
    """bytes and embedded messages (an empty message is still written: it is present)."""
    return _tag(field, LEN) + _varint(len(value)) + value


def text(field: int, value: str) -> bytes:
    return raw(field, value.encode()) if value else b""


def entry(field: int, key: str, value: bytes) -> bytes:
    """One entry of a ``map<string, Message>`` field: a message {1: key, 2: value}."""
    return raw(field, text(1, key) + raw(2, value))
