"""EdgeFleet's cloud hub: judges escalated windows with the full model, stores events, sends verdicts back.

The parts, each usable on its own:

- :mod:`cloud_hub.settings` — :class:`HubSettings`, the one settings object of the deployable;
- :mod:`cloud_hub.store` — persistence (SQLAlchemy, SQLite by default, PostgreSQL by URL);
- :mod:`cloud_hub.adjudication` — the full model (:class:`Judge`) and its micro-batcher;
- :mod:`cloud_hub.ingest` — the MQTT side: escalations in, verdicts out;
- :mod:`cloud_hub.api` — the REST API under ``/api/v1``;
- :mod:`cloud_hub.server` — :class:`HubServer`, all of it in the current event loop.

Every failure the hub raises on purpose is a :class:`cloud_hub.errors.HubError`.
"""
