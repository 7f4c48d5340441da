"""MetaCluster."""
