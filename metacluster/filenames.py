"""The names of the files a compression leaves behind, in one place.

The library writes them (`metacluster compress --out`, `metacluster report`), the
worker stores a job's files under them, the service serves them by them, and the
client downloads by them: a job's artifacts are ``model.mcz`` (the packed model),
``report.json`` (the numbers) and ``report.html`` (the numbers and plots).
"""

from __future__ import annotations

MODEL_FILE = "model.mcz"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"

__all__ = ["MODEL_FILE", "REPORT_HTML", "REPORT_JSON"]
