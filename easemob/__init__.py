"""Easemob's group REST API: an async client, and a local emulator of the service."""
