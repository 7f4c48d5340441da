"""The methods, each registering itself with `pipeline.registry.register_method`: the
MetaCluster pipeline with its dkm and kmeans variants (metacluster), the baselines
(baselines) and the baseline points of a report (diagnostics). Imported by the package
root, which is what registers them."""
