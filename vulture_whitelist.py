# Names vulture cannot see used: `make check` runs `vulture gateway bench vulture_whitelist.py`.
# Each is used by a framework or a protocol, never called by name in this code.
_ = None

_.__class__  # gateway/_compat.py: the server's class swapped for one that answers bad HTTP
_.handlers  # gateway/logging.py: the logging module reads a logger's handlers
_.latency_ms  # models.py: pydantic fields, written into every answer
_.upstream_request
_.previous_version
_._server  # serve.py: EagerSite's listening socket, read by aiohttp's runner (addresses, stop)
_.next_cursor  # models.py: CancellationList, the listing's shape in the OpenAPI document
_.critical  # log_output.py: the level methods structlog's bound logger may call
_.debug
_.err
_.fatal
_.warn
_.markdown_table  # simulate/scenarios.py: a test keeps the README's scenario table equal to it
_.unmapped_errors  # models.py: ConnectionsHealth, the console's JSON, keyword-built in api.py
_.generated_at
