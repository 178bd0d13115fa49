"""kube-sessions worker runtime: hosts one session's app, one call at a time."""
