//! The `pipeline` binary's subcommands: argument parsing over the library, and the
//! rendering of what it returns. Nothing here is reachable from the library.

pub mod db;
pub mod etl;
pub mod grid;
pub mod train;

use anyhow::Context as _;

/// `--database-url` / `DATABASE_URL`, which every command but `train` needs.
pub fn database_url(url: Option<&str>) -> anyhow::Result<&str> {
    url.context("no database given: set DATABASE_URL or pass --database-url")
}

/// glibc's malloc with a fixed mmap threshold of 128 KiB, unless the environment sets
/// one (`MALLOC_MMAP_THRESHOLD_`, `GLIBC_TUNABLES`). By default glibc raises the
/// threshold each time a large block is freed, so the loads' chunk-sized buffers
/// (polars' columns, COPY messages; freed and allocated again from several threads)
/// move into its per-thread heaps and stay resident: load-customers' peak RSS grew with
/// the files (74 / 100 / 132 MB at 1x / 10x / 100x). Fixed, such blocks are mapped
/// and returned whole (see bench/README.md for the figures). mimalloc was measured
/// too: flatter than the default but higher (128 / 160 / 171 MB).
pub fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name| std::env::var_os(name).is_some();
        if !set("MALLOC_MMAP_THRESHOLD_") && !set("GLIBC_TUNABLES") {
            // SAFETY: mallopt only sets one of glibc's allocator parameters (an int);
            // it takes the allocator's own lock, and runs before any other thread.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            }
        }
    }
}
