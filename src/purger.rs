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
//!
//! It also purges stranded pools (see [`crate::stranded`]): a freer's
//! report wakes it, and while reports come it looks at them every stranded
//! delay (10 ms, backing off to 160 ms while it finds nothing to purge),
//! in short passes that do nothing else.

use crate::{arena, decay, heap, large};
use core::ffi::c_void;

/// The purger thread's body (started by [`decay::note_dirty`]).
pub extern "C" fn thread_main(_: *mut c_void) -> *mut c_void {
    // When the next full pass is due; `None`: when something is dirtied.
    let mut due: Option<u64> = None;
    loop {
        let dirtied = decay::purger_begin_pass();
        let now = decay::now_ms();
        // Woken early for stranded pools only: the rest can wait (a full
        // pass also steals every heap's large slot). The first report to a
        // purger asleep without a deadline wakes it through `note_dirty`,
        // so that look comes with a full pass.
        if due.map_or(dirtied, |due| due <= now) {
            heap::collect_idle();
            due = decay::earliest(arena::purge(now, false), large::purge(now, false));
        }
        let stranded = arena::purge_stranded(now);
        decay::purger_wait(due, stranded.next_look, stranded.watching);
    }
}
