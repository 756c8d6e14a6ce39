"""Bytes in: the granian server and its signals (server.py), the connection front on the public port
(front.py), and the same app as a Ray Serve deployment (ray_serve.py)."""
