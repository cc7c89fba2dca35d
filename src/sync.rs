//! The atomics and the lock the allocator shares between threads, in one
//! place so that a model checker can replace them.

#[cfg(not(all(test, loom)))]
pub use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
// Under loom every atomic is the model checker's, which explores the
// interleavings and the weak-memory outcomes their orderings allow. Only the
// modelled modules' atomics are needed there.
#[cfg(all(test, loom))]
pub use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use core::cell::UnsafeCell;
#[cfg(not(all(test, loom)))]
use {crate::os::yield_now, core::hint::spin_loop};
// A loom thread that spins must hand control to the model's scheduler, or
// the model never ends.
#[cfg(all(test, loom))]
use loom::{hint::spin_loop, thread::yield_now};

/// A test-and-test-and-set spin lock for slow paths (arena lists, the idle
/// heap list, the shared heap). Never taken on a fast path. It backs off with
/// `sched_yield`, so a holder preempted on this 2-core class of machine does
/// not burn the other core.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock holding `value`.
    #[cfg(not(all(test, loom)))]
    pub const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// An unlocked lock holding `value` (loom's atomics have no `const fn`).
    #[cfg(all(test, loom))]
    pub fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Takes the lock; the guard releases it.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    spin_loop();
                    spins += 1;
                } else {
                    yield_now();
                }
            }
            if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
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
        self.locked.store(false, Ordering::Release);
    }
}

/// Proof that a [`SpinLock`] is held.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference is live.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, so no other reference is live.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.locked_store_release();
    }
}

impl<T> SpinGuard<'_, T> {
    fn locked_store_release(&self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
