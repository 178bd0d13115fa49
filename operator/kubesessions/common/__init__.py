"""Small helpers of the operator's side: RFC 3339 time (``timefmt``), structured logs
(``logs``), the event loop (``eventloop``), Prometheus text (``metrics``), and which extras
are installed (``extras``).

Imports nothing else of ours, and nothing outside the standard library but uvloop where it is
installed: the worker uses these too (its event loop, its extras check).
"""
