"""Pure translation between the canonical cancel and a provider's dialect: no I/O here.

``build`` turns (definition, connection, request) into an ``UpstreamRequest``; ``classify``
turns the provider's answer into an ``Outcome``.
"""
