"""The numeric pieces: k-means (kmeans), codebooks, edge groups and uniform quantizers
(codebook), bit packing and the rANS coder (packing). Import only the spec."""
