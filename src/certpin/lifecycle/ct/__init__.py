"""Certificate Transparency watching: which certificates CAs logged for pinned names, decided by
certpin's one verdict (docs/ct.md).

Modules, bottom up: `merkle` (RFC 6962/9162 hashing and proofs), `sth` and `checkpoint` (signed
tree heads of RFC 6962 logs and static-ct-api checkpoints), `loglist` (the v3 log list), `entries`
and `certs` (log entries, names-first certificate parsing), `http` and `sources` (reading a log of
either kind), `decide` (coverage and the verdict), `state` (the crash-safe state), `watch` (the
watcher), `hook` (``certpin ct hook`` for certspotter). Errors: `errors`.
"""
