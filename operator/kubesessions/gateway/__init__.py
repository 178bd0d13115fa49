"""`kubesessions gateway`: the sessions API over HTTP, routed to warm worker pods."""
