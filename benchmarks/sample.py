"""`python -m benchmarks sample`: write generated events as JSON lines, for trying the store out."""

from __future__ import annotations

import sys

import click

from benchmarks.workload import generate_events, generate_query_channels_response


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=5_000, show_default=True,
              help="How many events.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same events.")
@click.option("--channels", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--users", type=click.IntRange(min=2), default=2_000, show_default=True)
@click.option("--query-response", is_flag=True,
              help="Write one query-channels response (30 channels) instead of events.")
def command(events: int, seed: int, channels: int, users: int, query_response: bool) -> None:
    """Write a realistic mix of Stream-shaped events to stdout, one JSON object per line.

    \b
    Example:
      python -m benchmarks sample --events 5000 > sample.jsonl
      chatledger --user alice import sample.jsonl
    """
    out = sys.stdout.buffer
    if query_response:
        out.write(generate_query_channels_response(min(channels, 30), 25, seed) + b"\n")
        return
    for event in generate_events(events, seed=seed, channels=channels, users=users):
        out.write(event)
        out.write(b"\n")
