//! Comparison workloads (filled in by the comparison work).
