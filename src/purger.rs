//! The background purger: a thread that returns memory which has stayed
//! free for the purge delay, so that a process that frees its heap and goes
//! idle gets its RSS back without calling anything (see [`decay`]). That
//! includes the pools live heaps keep for reuse, purged in place.
//!
//! Each pass takes back blocks freed to the heaps of exited threads (and
//! returns their unused pools), then purges quiet arenas, moves every
//! heap's large slot into the shared cache, and unmaps expired cached
//! mappings. Between passes it sleeps until the oldest dirty memory comes
//! due, or, when nothing is dirty, on a futex until something is.

use crate::{arena, decay, heap, large};
use core::ffi::c_void;

/// The purger thread's body (started by [`decay::note_dirty`]).
pub extern "C" fn thread_main(_: *mut c_void) -> *mut c_void {
    loop {
        decay::purger_begin_pass();
        let now = decay::now_ms();
        heap::collect_idle();
        let arenas_due = arena::purge(now, false);
        let cache_due = large::purge(now, false);
        decay::purger_wait(decay::earliest(arenas_due, cache_due));
    }
}
