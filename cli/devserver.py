"""`chatledger devserver`: the local development server, in the foreground until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shlex
import signal

import click

from chatledger.cli.context import fail

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def export_line(url: str, api_key: str, user_id: str, token: str) -> str:
    """The shell line that points `chatledger sync` (and the other commands) at a server as
    one user: the variables its options read."""
    values = {"CHATLEDGER_BASE_URL": url, "CHATLEDGER_API_KEY": api_key,
              "CHATLEDGER_USER": user_id, "CHATLEDGER_TOKEN": token}
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


@click.command("devserver")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; only loopback unless --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=4400, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--api-key", default="devkey", show_default=True, help="The api key clients pass.")
@click.option("--secret", default="devsecret", show_default=True,
              help="The secret user tokens are signed with (HS256).")
@click.option("--seed", "seed_name", type=click.Choice(["demo", "empty"]), default="demo",
              show_default=True, help="Initial data: demo users, channels and history, or none.")
@click.option("--fault", "faults", multiple=True, metavar="SPEC",
              help="Inject a fault, e.g. send_message:error5xx:times=3 or *:delay=0.5:p=0.2 "
                   "(repeatable; see docs/devserver.md).")
@click.option("--health-interval", type=click.FloatRange(min=0.01), default=30.0,
              show_default=True, help="Seconds between the server's health.check frames.")
@click.option("--client-timeout", type=click.FloatRange(min=0.01), default=None,
              help="Seconds a silent WebSocket client is kept [default: 2 x interval + 10].")
@click.option("--rng-seed", type=int, default=0, show_default=True,
              help="Seed of the RNG that probabilistic faults draw from.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host (the /_dev endpoints have no authentication).")
def devserver_command(host: str, port: int, api_key: str, secret: str, seed_name: str,
                      faults: tuple[str, ...], health_interval: float,
                      client_timeout: float | None, rng_seed: int, allow_remote: bool) -> None:
    """Run a local chat server that speaks Stream's REST and WebSocket protocol.

    In-memory state, loopback only, with fault injection for testing offline behaviour.
    Prints the URL, the api key, a token per seeded user and a ready-to-paste `export ...`
    line for `chatledger sync`; runs until Ctrl-C.

    \b
    Examples:
      chatledger devserver
      chatledger devserver --port 0 --seed empty
      chatledger devserver --fault send_message:error5xx:times=3 --fault '*:delay=0.5:p=0.2'
    """
    from chatledger.sync.devserver import DevServer, FaultSpecError, parse_spec

    if not is_loopback(host) and not allow_remote:
        fail(f"refusing to listen on {host}: it is not a loopback address "
             "(the server has no real security; pass --allow-remote to do it anyway)")
    try:
        rules = [parse_spec(spec) for spec in faults]
    except FaultSpecError as error:
        raise click.BadParameter(str(error), param_hint="--fault") from None
    server = DevServer(api_key, secret, health_interval=health_interval,
                       client_timeout=client_timeout, seed=seed_name, rng_seed=rng_seed)
    for rule in rules:
        server.faults.add_fault(rule)

    async def serve() -> None:
        try:
            await server.start(host, port)
        except OSError as error:
            fail(f"cannot listen on {host}:{port}: {error.strerror or error}")
        try:
            click.echo(f"chatledger devserver listening on {server.url}")
            click.echo(f"  websocket  {server.ws_url}")
            click.echo(f"  api key    {api_key}")
            users = sorted(server.state.users)
            if users:
                click.echo("  tokens (Authorization header, with stream-auth-type: jwt):")
                width = max(len(u) for u in users)
                for user_id in users:
                    click.echo(f"    {user_id:<{width}}  {server.make_token(user_id)}")
                click.echo(f"To sync a store as {users[0]} against this server, paste "
                           "(another user: its CHATLEDGER_USER and CHATLEDGER_TOKEN):")
                click.echo("  " + export_line(server.url, api_key, users[0],
                                              server.make_token(users[0])))
                click.echo("  chatledger sync --once")
            for rule in server.faults.list():
                click.echo(f"  fault      {rule['endpoint']}:{rule['kind']} "
                           f"(times={rule['times']}, p={rule['probability']})")
            click.echo("  state      GET /_dev/state   faults  GET|POST|DELETE /_dev/faults")
            click.echo("Press Ctrl-C to stop.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                # A clean stop on Ctrl-C and on `kill`: close the sockets, say so, exit 0.
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, stop.set)
            await stop.wait()
            click.echo("Stopped.", err=True)
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)
