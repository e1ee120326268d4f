"""A local development server that speaks the backend's REST and WebSocket protocol.

    async with DevServer(seed="demo") as server:      # or ThreadedDevServer / run_in_thread
        token = server.make_token("alice")
        ...  # point a client at server.url with api_key "devkey"

See docs/devserver.md.
"""

from chatledger.sync.devserver.auth import make_token, verify_token
from chatledger.sync.devserver.faults import Fault, FaultSet, FaultSpecError, parse_spec
from chatledger.sync.devserver.runner import DevServer, ThreadedDevServer, run_in_thread
from chatledger.sync.devserver.seeds import DEMO_USERS, demo_channels, demo_seed, seed
from chatledger.sync.devserver.state import State

__all__ = [
    "DEMO_USERS", "DevServer", "Fault", "FaultSet", "FaultSpecError", "State",
    "ThreadedDevServer", "demo_channels", "demo_seed", "make_token", "parse_spec",
    "run_in_thread", "seed", "verify_token",
]
