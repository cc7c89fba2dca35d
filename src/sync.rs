//! The atomics and the lock the allocator shares between threads, in one
//! place so that a model checker can replace them.

#[cfg(not(all(test, loom)))]
pub use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
// Under loom every atomic is the model checker's, which explores the
// interleavings and the weak-memory outcomes their orderings allow. Only the
// modelled modules' atomics are needed there.
#[cfg(all(test, loom))]
pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use core::cell::UnsafeCell;
use core::hint::spin_loop;
#[cfg(not(all(test, loom)))]
use core::sync::atomic::AtomicU32 as LockWord;
#[cfg(all(test, loom))]
use loom::sync::atomic::AtomicU32 as LockWord;

/// The lock word's states (Drepper's "futexes are tricky", mutex 2).
const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and a thread may be asleep waiting for it.
const CONTENDED: u32 = 2;
/// Spins before a waiter sleeps: long enough to ride out a short critical
/// section on the other core, short enough not to burn a time slice.
#[cfg(not(all(test, loom)))]
const SPINS: u32 = 100;
/// Under loom every spin is a step the model explores.
#[cfg(all(test, loom))]
const SPINS: u32 = 1;

/// A mutex for slow paths (arena lists, the idle heap list, the shared
/// heap, the large-mapping cache). Never taken on a fast path. A waiter
/// spins briefly, then sleeps on a futex. Why not spin and `sched_yield`:
/// a holder can take a page fault inside (the first touch of a huge page
/// clears 2 MiB), and on a 2-core machine yielding waiters kept stealing
/// the holder's core: four threads filling 1 GiB spent 5 s of system time
/// in `sched_yield` (82,000 calls) to do 0.2 s of work.
pub struct Lock<T> {
    state: LockWord,
    /// The holding thread (`os::thread_id`), 0 when free. Only read by a
    /// thread that finds the lock taken, to abort if it holds the lock
    /// itself: a debug assertion or overflow check that panics under a lock
    /// allocates, and that allocation may need the same lock. Without the
    /// check the thread waited on itself for good (a debug test build hung
    /// instead of failing).
    #[cfg(not(all(test, loom)))]
    holder: core::sync::atomic::AtomicUsize,
    value: UnsafeCell<T>,
    /// Under loom, the futex: a waiter checks the word and sleeps while
    /// holding `parking`, a waker notifies while holding it, so a wake that
    /// comes after the check is never lost (the kernel's guarantee), and a
    /// lost wake-up in the protocol shows as a deadlock.
    #[cfg(all(test, loom))]
    parking: loom::sync::Mutex<()>,
    #[cfg(all(test, loom))]
    wakeup: loom::sync::Condvar,
}

// SAFETY: the lock serialises every access to `value`.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    /// An unlocked lock holding `value`.
    #[cfg(not(all(test, loom)))]
    pub const fn new(value: T) -> Self {
        Self {
            state: LockWord::new(UNLOCKED),
            holder: core::sync::atomic::AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// An unlocked lock holding `value` (loom's atomics have no `const fn`).
    #[cfg(all(test, loom))]
    pub fn new(value: T) -> Self {
        Self {
            state: LockWord::new(UNLOCKED),
            value: UnsafeCell::new(value),
            parking: loom::sync::Mutex::new(()),
            wakeup: loom::sync::Condvar::new(),
        }
    }

    /// Takes the lock; the guard releases it.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T> {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        #[cfg(not(all(test, loom)))]
        self.holder.store(crate::os::thread_id(), Ordering::Relaxed);
        LockGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        // Only this thread writes its own id here, and it clears it before
        // it unlocks, so seeing it means this thread holds the lock.
        #[cfg(not(all(test, loom)))]
        if self.holder.load(Ordering::Relaxed) == crate::os::thread_id() {
            crate::os::fatal("a thread took an allocator lock it holds (a panic inside the allocator?)");
        }
        for _ in 0..SPINS {
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            spin_loop();
        }
        // From here on the lock is taken as CONTENDED, never LOCKED: this
        // thread cannot know whether others still sleep, so its unlock must
        // wake one.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            self.wait_while_contended();
        }
    }

    /// Takes the lock without a guard, for fork handlers that release it in
    /// another function.
    pub fn lock_raw(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken with [`lock_raw`](Self::lock_raw).
    ///
    /// # Safety
    /// The lock is held by a forgotten guard of this thread (or, in a forked
    /// child, of the parent's forking thread).
    pub unsafe fn unlock_raw(&self) {
        self.unlock();
    }

    fn unlock(&self) {
        #[cfg(not(all(test, loom)))]
        self.holder.store(0, Ordering::Relaxed);
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            self.wake_one();
        }
    }

    /// Sleeps while the word is CONTENDED (returns at once otherwise; may
    /// return spuriously).
    #[cfg(not(all(test, loom)))]
    fn wait_while_contended(&self) {
        crate::os::futex_wait(&self.state, CONTENDED, None);
    }

    /// Wakes one thread sleeping in `wait_while_contended`, if any.
    #[cfg(not(all(test, loom)))]
    fn wake_one(&self) {
        crate::os::futex_wake(&self.state);
    }

    #[cfg(all(test, loom))]
    fn wait_while_contended(&self) {
        let parked = self.parking.lock().unwrap();
        if self.state.load(Ordering::SeqCst) == CONTENDED {
            drop(self.wakeup.wait(parked).unwrap());
        }
    }

    #[cfg(all(test, loom))]
    fn wake_one(&self) {
        let _parked = self.parking.lock().unwrap();
        self.wakeup.notify_one();
    }
}

/// Proof that a [`Lock`] is held.
pub struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> core::ops::Deref for LockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference is live.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, so no other reference is live.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Lock;
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Set in the child this test starts (this test binary run again).
    const CHILD: &str = "POOLMALLOC_TEST_RELOCK_CHILD";

    /// A thread that takes a lock it already holds aborts with a message
    /// (what a panic under an allocator lock leads to) instead of waiting
    /// for itself. The double lock runs in a child process, this test
    /// binary run again for this test alone.
    #[test]
    fn taking_a_held_lock_again_aborts_with_a_message() {
        if std::env::var_os(CHILD).is_some() {
            let lock = Lock::new(0u32);
            let _held = lock.lock();
            let _again = lock.lock();
            return; // Reached only if the second lock returned.
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sync::tests::taking_a_held_lock_again_aborts_with_a_message", "--nocapture"])
            .env(CHILD, "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                child.kill().unwrap();
                panic!("the child waited for a lock it held");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        const SIGABRT: i32 = 6;
        assert_eq!(status.signal(), Some(SIGABRT), "status {status}, stderr: {stderr:?}");
        assert!(stderr.contains("took an allocator lock it holds"), "stderr: {stderr:?}");
    }
}
