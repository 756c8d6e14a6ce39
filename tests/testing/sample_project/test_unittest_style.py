"""The same server for unittest: the context manager, held for the class."""

from __future__ import annotations

import base64
import io
import json
import unittest

import boto3
from PIL import Image

from sdxl_bedrock import testing


class StableImageCoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.server = testing.server("--relaxed-sizes")
        cls.url = cls.server.__enter__()
        cls.addClassCleanup(cls.server.__exit__, None, None, None)

    def test_image_to_image(self) -> None:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buffer, "PNG")
        with testing.bedrock_env(self.url):
            client = boto3.client("bedrock-runtime")
            body = {
                "prompt": "a boat",
                "mode": "image-to-image",
                "strength": 0.5,
                "output_format": "jpeg",
                "image": base64.b64encode(buffer.getvalue()).decode(),
            }
            answer = json.loads(
                client.invoke_model(modelId="us.stability.sd3-5-large-v1:0", body=json.dumps(body))[
                    "body"
                ].read()
            )
        self.assertEqual(answer["finish_reasons"], [None])
        self.assertEqual(Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).format, "JPEG")
