"""The `chatledger` command."""
