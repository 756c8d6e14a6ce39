"""sdxl-bedrock: Stable Diffusion XL 1.0 behind the Amazon Bedrock Runtime wire protocol."""

__version__ = "0.1.0"
