"""The MetaCluster worker: the Celery app, its thin task, the job runner and recovery.

The task hands a job id to `worker.runner`, which runs the library's use case
(`metacluster.workflow.compress_file`) and changes the job's state through
`core.jobs`. Nothing in `service` (the HTTP API) is imported here, nor is this
package imported there.
"""
