//! The gateway's memory allocator: jemalloc, tuned at start so that memory freed after a
//! burst of streams goes back to the operating system within about a second, instead of
//! staying resident (glibc's malloc keeps most of a burst's peak; jemalloc's defaults
//! keep it for ten seconds and only purge while the process allocates). Why and what it
//! costs: deploy/TUNING.md, "Allocator".

use tikv_jemalloc_ctl::{arenas, background_thread, Access, AsName};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Milliseconds a freed ("dirty") page stays mapped for reuse before it is returned to the
/// OS (jemalloc's default: 10,000). One second still serves a steady load from pages
/// already mapped, while the peak of a finished burst is released promptly.
const DIRTY_DECAY_MS: isize = 1_000;

/// Milliseconds a lazily freed ("muzzy", `MADV_FREE`) page waits before it is purged with
/// `MADV_DONTNEED`. Muzzy pages still count as resident until the kernel runs short of
/// memory, so 0 makes the release visible to RSS and to a container's memory limit.
const MUZZY_DECAY_MS: isize = 0;

/// jemalloc's own options variable (its name carries the `_rjem_` prefix the crate builds
/// jemalloc with). When an operator sets it, its options stand and [`tune`] leaves them.
pub const CONF_ENV: &str = "_RJEM_MALLOC_CONF";

/// Sets the decay times for every arena and starts jemalloc's background purging threads
/// (without them pages are purged only when the process allocates, so an idle gateway
/// would keep its peak). Does nothing when [`CONF_ENV`] is set.
pub fn tune() -> Result<(), tikv_jemalloc_ctl::Error> {
    if std::env::var_os(CONF_ENV).is_some() {
        return Ok(());
    }
    // Arenas created from now on (one per worker thread, lazily) take these values.
    b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)?;
    b"arenas.muzzy_decay_ms\0".name().write(MUZZY_DECAY_MS)?;
    // Arenas that already exist keep the values they were created with unless told.
    for arena in 0..arenas::narenas::read()? {
        // An arena not created yet answers with an error; it takes the values above.
        let _ = format!("arena.{arena}.dirty_decay_ms\0")
            .name()
            .write(DIRTY_DECAY_MS);
        let _ = format!("arena.{arena}.muzzy_decay_ms\0")
            .name()
            .write(MUZZY_DECAY_MS);
    }
    background_thread::write(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tune_sets_decay_and_background_threads() {
        if std::env::var_os(CONF_ENV).is_some() {
            return;
        }
        tune().unwrap();
        let dirty: isize = b"arenas.dirty_decay_ms\0".name().read().unwrap();
        let muzzy: isize = b"arenas.muzzy_decay_ms\0".name().read().unwrap();
        assert_eq!((dirty, muzzy), (DIRTY_DECAY_MS, MUZZY_DECAY_MS));
        let arena0: isize = b"arena.0.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(arena0, DIRTY_DECAY_MS);
        assert!(background_thread::read().unwrap());
    }
}
