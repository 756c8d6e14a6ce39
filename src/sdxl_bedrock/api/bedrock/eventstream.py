"""AWS event-stream frames (application/vnd.amazon.eventstream), the framing of InvokeModelWithResponseStream.

botocore ships only the decoder (`botocore.eventstream`), so the encoder is here, tested against it:
a frame is the prelude (total length, headers length, CRC32 of those 8 bytes), the headers, the payload,
and a CRC32 of everything before it, all big-endian. Every header we send is a string (type 7).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

STRING_HEADER = 7


def encode_header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    return (
        struct.pack(">B", len(name_bytes))
        + name_bytes
        + struct.pack(">BH", STRING_HEADER, len(value_bytes))
        + value_bytes
    )


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    header_bytes = b"".join(encode_header(name, value) for name, value in headers.items())
    total_length = 4 + 4 + 4 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack(">II", total_length, len(header_bytes))
    prelude_crc = struct.pack(">I", binascii.crc32(prelude))
    message = prelude + prelude_crc + header_bytes + payload
    return message + struct.pack(">I", binascii.crc32(message))


def chunk_frame(model_json: bytes) -> bytes:
    """A `chunk` event: the payload carries the model's JSON base64-encoded, as Bedrock sends it."""
    payload = json.dumps({"bytes": base64.b64encode(model_json).decode("ascii")}).encode()
    return encode_frame(
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, payload
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    """An error after the 200 has started; boto3 raises it as EventStreamError with this code."""
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message}).encode(),
    )
