"""The run: the method registry (registry), `plan`, the prepared run (`Context`) and its
report, stage checkpoints, progress lines, and `compress` (dispatch), which looks the
method up and hands it the prepared run. Imports no method: methods register here."""
