"""Shared core of callback-sink: settings, events, signature, topology, logging."""
