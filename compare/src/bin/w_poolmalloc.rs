//! The comparison workloads on poolmalloc. See `poolmalloc_compare::main`.

#[global_allocator]
static GLOBAL: poolmalloc::PoolMalloc = poolmalloc::PoolMalloc;

fn main() {
    poolmalloc_compare::main("poolmalloc", String::new);
}
