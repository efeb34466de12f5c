"""The lab web application and HTTP API (DESIGN §12)."""
