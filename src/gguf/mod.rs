//! GGUF v2/v3: a validating reader over memmap2 with zero-copy tensor views, and a writer.
