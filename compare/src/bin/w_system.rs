//! The comparison workloads on the system allocator (glibc malloc here).
//! See `poolmalloc_compare::main`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    poolmalloc_compare::main("system", String::new);
}
