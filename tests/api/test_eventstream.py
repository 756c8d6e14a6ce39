"""Our event-stream encoder, checked by botocore's own decoder."""

from __future__ import annotations

import base64
import json

from botocore.eventstream import EventStreamBuffer

from sdxl_bedrock.api.bedrock.eventstream import chunk_frame, encode_frame, exception_frame


def decode(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(message.headers, message.payload) for message in buffer]


def test_a_frame_round_trips_through_botocore() -> None:
    frame = encode_frame({":event-type": "chunk", "x": "ü"}, b"payload")
    [(headers, payload)] = decode(frame)
    assert headers == {":event-type": "chunk", "x": "ü"}
    assert payload == b"payload"


def test_a_chunk_carries_the_model_json_base64_encoded() -> None:
    model_json = json.dumps({"result": "success", "artifacts": []}).encode()
    [(headers, payload)] = decode(chunk_frame(model_json) + b"")
    assert headers == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    assert base64.b64decode(json.loads(payload)["bytes"]) == model_json


def test_frames_concatenate_into_a_stream() -> None:
    stream = chunk_frame(b"{}") + exception_frame("modelStreamErrorException", "boom")
    messages = decode(stream)
    assert [headers[":message-type"] for headers, _ in messages] == ["event", "exception"]
    assert messages[1][0][":exception-type"] == "modelStreamErrorException"
    assert json.loads(messages[1][1]) == {"message": "boom"}
