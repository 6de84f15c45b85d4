"""Skill-based queues and agents (issue 3 on the roadmap).

The routing core is pure (no I/O, no clock; every call takes ``now``), one module per idea:

* ``config`` / ``profile``: queue definitions and policies (TOML), agent profiles (database).
* ``requirements``: the skill/attribute expression language (``spanish >= 3 and billing >= 2``).
* ``agent_state``: an agent's two-axis live state (presence x activity) and reachability.
* ``entries``: a waiting caller and the global order callers are served in.
* ``scoring``: the score vector that picks among eligible agents, and the stable tie-break hash.
* ``trace``: the decision trace behind every offer ("why that agent", "why not agent X").
* ``engine``: :class:`~helpline.queue.engine.RoutingEngine`, which ties them together.
* ``ewt``: position- and pool-aware estimated wait with a P90 band.
* ``kpi``: service level, ASA, AHT, abandonment, occupancy and EWT accuracy from the event log.
* ``views``: JSON-able snapshots for the API.

``runtime`` (``QueueRuntime``) owns the engine live: it feeds it SIP and clock events, dials the
offers and bridges media.
"""
