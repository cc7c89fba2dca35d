//! The comparison workloads on mimalloc. See `poolmalloc_compare::main`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    poolmalloc_compare::main("mimalloc", String::new);
}
