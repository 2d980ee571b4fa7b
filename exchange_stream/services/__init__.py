"""Services: the gateway's parts that keep state over time, on an injected clock.

The node (hub ↔ mesh subscriptions), sessions and their registry, admission and the drain,
the publisher, health, metrics, authenticators, heartbeats, the in-memory mesh and the market
engine. They use Twisted's Deferreds, services and timers but open no socket themselves: the
adapters below them in the call chain (above them in the layers) do.
"""
