//! The comparison workloads on jemalloc. See `poolmalloc_compare::main`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's version and whether background threads purge memory, since
/// both change what `idle` and the RSS columns show.
fn settings() -> String {
    let version = tikv_jemalloc_ctl::version::read().unwrap_or("unknown");
    // "5.3.0-0-g<hash>": the release is enough.
    let version = version.split('-').next().unwrap_or(version);
    let background = tikv_jemalloc_ctl::background_thread::read().map_or("unknown".into(), |b| b.to_string());
    format!("je_version={version} je_background_thread={background}")
}

fn main() {
    poolmalloc_compare::main("jemalloc", settings);
}
