"""History: what the stored events say after the fact.

``explain`` (why a JSONPath did or did not match an event), ``dryrun`` (a
JSONPath over many stored events, with the reasons grouped), and the
replays and lineage built on the same stored events.
"""
