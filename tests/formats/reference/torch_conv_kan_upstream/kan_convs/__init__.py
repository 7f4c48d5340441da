# Not upstream: only the layer files vendored here (see ../UPSTREAM.md).
