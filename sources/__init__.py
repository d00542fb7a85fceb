"""Data sources: connectors (push, poll, listing) and the engines that run them under the
hysteresis manager. Items reach the processor only through the center's durable admission."""
