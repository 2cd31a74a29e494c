"""EdgeFleet's cloud hub: judges escalated windows with the full model, stores events, sends verdicts back,
and serves the fleet's REST API (registry, rollouts, drift, access control).

The parts, each usable on its own:

- :mod:`cloud_hub.settings` — :class:`HubSettings`, the one settings object of the deployable;
- :mod:`cloud_hub.store` — persistence (SQLAlchemy, SQLite by default, PostgreSQL by URL), migrated by
  :mod:`cloud_hub.migrate` (Alembic);
- :mod:`cloud_hub.adjudication` — the full model (:class:`Judge`) and dynamic batching (:class:`Adjudicator`);
- :mod:`cloud_hub.ingest` — the MQTT side: escalations in, verdicts out;
- :mod:`cloud_hub.auth` — tokens, scopes, rate limits, the audit log;
- :mod:`cloud_hub.registry`, :mod:`cloud_hub.rollout`, :mod:`cloud_hub.drift` — models, staged rollouts, drift;
- :mod:`cloud_hub.api` — the REST API under ``/api/v1`` and ``/metrics``;
- :mod:`cloud_hub.server` — :class:`HubServer`, all of it in the current event loop.

Every failure the hub raises on purpose is a :class:`cloud_hub.errors.HubError`.
"""
