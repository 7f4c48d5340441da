"""The service's shared core: what the API (`service`) and the workers (`worker`) both use.

- `settings`: the one settings object, from ``METACLUSTER_*`` environment variables;
- `db` and `repositories`: tables, sessions and every query;
- `jobs`: the job state machine (every status transition);
- `producer`: sends job messages to the broker by task name;
- `storage`: blobs (local directory, or a registered object-store backend);
- `migrations`: Alembic upgrades; `service_errors`: the service's error classes.

It imports the `metacluster` library and neither `service` nor `worker`.
"""
