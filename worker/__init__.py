"""Celery worker of the MetaCluster service.

The tasks are thin; job execution lives in ``service.job_runner``.
"""
