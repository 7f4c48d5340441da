"""MetaCluster HTTP service: FastAPI app, database, storage and job queueing.

The API only inspects uploads and enqueues work by task name; compression runs in `worker/`.
"""
