"""Talking to the chat backend: adapter, replayer, reconnect catch-up, development server."""
