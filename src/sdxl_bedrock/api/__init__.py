"""The wire faces: thin adapters from HTTP to the wire-neutral request and back. No torch here."""
