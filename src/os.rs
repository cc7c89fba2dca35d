//! The only module that calls libc: mappings, page size, thread-exit keys,
//! fork handlers, and the one way out for fatal errors.
//!
//! Nothing here allocates through the global allocator, panics or formats.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The OS page size, read once (`sysconf`) and cached.
#[inline]
pub fn page_size() -> usize {
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let queried = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if queried > 0 { queried as usize } else { 4096 };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Maps `size` bytes of fresh zeroed read-write memory, or null.
pub fn map(size: usize) -> *mut u8 {
    map_flags(size, 0)
}

/// Maps `size` bytes reserved lazily (`MAP_NORESERVE`), for sparse tables.
pub fn map_sparse(size: usize) -> *mut u8 {
    map_flags(size, libc::MAP_NORESERVE)
}

fn map_flags(size: usize, extra_flags: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing aliases nothing we own.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { ptr::null_mut() } else { p.cast() }
}

/// Maps `size` bytes (a multiple of the page size) so that `result + offset`
/// is aligned to `align` (a power of two, at least the page size; `offset` a
/// multiple of the page size below `align`). The excess is unmapped again.
/// Returns null when the address space is exhausted.
pub fn map_aligned(size: usize, align: usize, offset: usize) -> *mut u8 {
    let page = page_size();
    debug_assert!(align.is_power_of_two() && align >= page && offset < align);
    let Some(reserve) = size.checked_add(align - page) else {
        return ptr::null_mut();
    };
    let base = map(reserve);
    if base.is_null() {
        return base;
    }
    let base_addr = base as usize;
    // The first address >= base whose (address + offset) is aligned.
    let start = (base_addr + offset).next_multiple_of(align) - offset;
    let start = if start < base_addr { start + align } else { start };
    let head = start - base_addr;
    let tail = reserve - head - size;
    // SAFETY: both ranges lie inside the mapping made just above and are not
    // handed out; they are page-aligned because every term is.
    unsafe {
        if head != 0 {
            unmap(base, head);
        }
        if tail != 0 {
            unmap(base.add(head + size), tail);
        }
    }
    start as *mut u8
}

/// Returns a mapping (or a page-aligned part of one) to the OS.
///
/// # Safety
/// `[p, p + size)` is mapped, owned by the caller and not used again.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range. munmap of a valid range cannot fail
    // except for resource limits when splitting a mapping; the memory then
    // stays mapped, which is a leak, not corruption.
    unsafe {
        libc::munmap(p.cast(), size);
    }
}

/// Resizes a mapping, moving it if needed (`MREMAP_MAYMOVE`); null on failure
/// (the old mapping is then untouched).
///
/// # Safety
/// `[p, p + old_size)` is page-aligned, mapped and owned by the caller: a
/// whole mapping or any page-aligned piece of one. (A range spanning two
/// kernel mappings fails, with the old range untouched.)
pub unsafe fn remap(p: *mut u8, old_size: usize, new_size: usize) -> *mut u8 {
    // ThreadSanitizer does not intercept mremap: the old range keeps its
    // access history, and when a later mremap lands another thread's buffer
    // on it, TSan reports a race between the two owners (seen once in
    // tests/std_collections). ci/tsan.sh sets this cfg; callers then copy.
    if cfg!(poolmalloc_tsan) {
        return ptr::null_mut();
    }
    // SAFETY: the caller owns the mapping; on success the old range is gone
    // and the new one is owned by the caller.
    let q = unsafe { libc::mremap(p.cast(), old_size, new_size, libc::MREMAP_MAYMOVE) };
    if q == libc::MAP_FAILED { ptr::null_mut() } else { q.cast() }
}

/// A pthread key whose destructor runs at thread exit.
pub struct ThreadExitKey(AtomicUsize);

const KEY_UNSET: usize = usize::MAX;

impl ThreadExitKey {
    /// A key not yet created.
    pub const fn new() -> Self {
        Self(AtomicUsize::new(KEY_UNSET))
    }

    /// Arms the key for the calling thread: `destructor(value)` runs when the
    /// thread exits. Creates the key on first use. Returns false if the OS
    /// refused (then no cleanup will run for this thread).
    pub fn arm(&self, destructor: unsafe extern "C" fn(*mut c_void), value: *mut c_void) -> bool {
        let mut key = self.0.load(Ordering::Acquire);
        if key == KEY_UNSET {
            let mut fresh: libc::pthread_key_t = 0;
            // SAFETY: `fresh` is a valid out-pointer; the destructor is an
            // `extern "C"` function that lives for the whole program.
            if unsafe { libc::pthread_key_create(&mut fresh, Some(destructor)) } != 0 {
                return false;
            }
            match self.0.compare_exchange(KEY_UNSET, fresh as usize, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => key = fresh as usize,
                Err(existing) => {
                    // Another thread won the race; keep its key.
                    // SAFETY: `fresh` was created above and never armed.
                    unsafe { libc::pthread_key_delete(fresh) };
                    key = existing;
                }
            }
        }
        // SAFETY: `key` was created by pthread_key_create and never deleted.
        unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, value) == 0 }
    }
}

/// Registers fork handlers once: `prepare` runs in the parent before `fork`,
/// `parent` and `child` after it on each side.
pub fn at_fork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) {
    // SAFETY: the handlers are `extern "C"` functions living for the whole
    // program. pthread_atfork only fails on memory exhaustion; then forked
    // children may deadlock, as with most allocators.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}

/// Writes `message` to stderr and aborts the process. The one exit for
/// detected corruption: no allocation, no formatting, no unwinding.
#[cold]
#[inline(never)]
pub fn fatal(message: &str) -> ! {
    const PREFIX: &[u8] = b"poolmalloc: fatal: ";
    // SAFETY: the buffers are valid for their lengths; write to fd 2 has no
    // other preconditions, and a short write only loses diagnostics.
    unsafe {
        libc::write(2, PREFIX.as_ptr().cast(), PREFIX.len());
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::abort()
    }
}

/// The calling thread's identity, never 0 (`pthread_self`: a read of the
/// thread pointer, no system call).
#[inline]
pub fn thread_id() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// Gives the CPU to another thread (a short wait on a thread that holds
/// something briefly and never waits for the caller).
pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

/// Milliseconds on a monotonic clock (the coarse one: a vDSO read, no
/// syscall; resolution of a few milliseconds is plenty for purge delays).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Reads a decimal environment variable without allocating; `None` if unset
/// or not a number.
pub fn env_u64(name: &core::ffi::CStr) -> Option<u64> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a pointer to
    // a NUL-terminated string owned by the environment.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: as above.
    let bytes = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// Returns the pages of `[p, p + size)` to the OS, keeping the mapping: they
/// read as zero when touched again (`MADV_DONTNEED`).
///
/// # Safety
/// The range is page-aligned, mapped, owned by the caller, and holds nothing
/// the caller needs.
pub unsafe fn purge(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range; DONTNEED on private anonymous
    // memory only drops its contents.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_DONTNEED);
    }
}

/// Blocks while `word == expected`, at most `timeout_ms` (forever if `None`).
/// May return early (spuriously or on a wake).
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ms: Option<u64>) {
    let ts;
    let ts_ptr = match timeout_ms {
        Some(ms) => {
            ts = libc::timespec {
                tv_sec: (ms / 1000) as libc::time_t,
                tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
            };
            &ts as *const libc::timespec
        }
        None => ptr::null(),
    };
    // SAFETY: `word` is a live aligned u32; the timeout (if any) is a valid
    // relative timespec.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, ts_ptr);
    }
}

/// Wakes one thread blocked in [`futex_wait`] on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a live aligned u32.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1);
    }
}

/// `membarrier(2)` commands (linux/membarrier.h; libc does not name them).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for [`membarrier`]; false if the kernel (before
/// 4.14), a seccomp filter or an emulator refuses. Idempotent.
pub fn membarrier_register() -> bool {
    // SAFETY: no memory is passed; an unknown command only fails.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// Makes every thread of the process that is running pass a full memory
/// barrier before this returns (threads not running pass one when they are
/// switched out): the heavy side of an asymmetric fence. Needs
/// [`membarrier_register`] first; false if it fails.
pub fn membarrier() -> bool {
    // SAFETY: as in `membarrier_register`.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// Sleeps for `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec { tv_sec: (ms / 1000) as libc::time_t, tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long };
    // SAFETY: `ts` is valid; an early return on a signal only shortens the
    // sleep.
    unsafe {
        libc::nanosleep(&ts, ptr::null_mut());
    }
}

/// Starts a detached thread running `body` with a small stack. The thread is
/// made by `pthread_create` directly, so nothing allocates through the Rust
/// global allocator. Returns false if the OS refused.
pub fn spawn_detached(body: extern "C" fn(*mut c_void) -> *mut c_void) -> bool {
    const STACK_SIZE: usize = 256 << 10;
    // SAFETY: the attribute object is initialised before use and destroyed
    // after; `body` lives for the whole program.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setstacksize(&mut attr, STACK_SIZE);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut thread: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut thread, &attr, body, ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        rc == 0
    }
}

/// Writes bytes to stderr (diagnostics; a short write only loses text).
pub fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Runs `hook` at process exit (`atexit`).
pub fn at_exit(hook: extern "C" fn()) {
    // SAFETY: the hook is an `extern "C"` function living for the whole
    // program; atexit fails only on memory exhaustion (then no report).
    unsafe {
        libc::atexit(hook);
    }
}

/// Nanoseconds on the monotonic clock (a vDSO read).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Asks for transparent huge pages on `[p, p + size)` (`MADV_HUGEPAGE`):
/// one fault per 2 MiB instead of per page. Advice only; ignored where THP
/// is off.
///
/// # Safety
/// The range is page-aligned and mapped by the caller.
pub unsafe fn advise_huge_pages(p: *mut u8, size: usize) {
    // SAFETY: advice on memory the caller owns; it changes no contents.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_HUGEPAGE);
    }
}

/// Turns `[p, p + size)`, one huge page's worth mapped with small pages,
/// into a transparent huge page now (`MADV_COLLAPSE`, Linux 6.1): the
/// kernel copies the resident pages into a huge page and zeroes the rest.
/// Contents do not change; pages not resident become resident. The range is
/// advised against huge pages again afterwards, so neither later faults nor
/// khugepaged make more of them there. False if the kernel did not (no huge
/// page to be had, or no `MADV_COLLAPSE`).
///
/// # Safety
/// The range is aligned to its size, mapped and owned by the caller.
pub unsafe fn collapse_to_huge_page(p: *mut u8, size: usize) -> bool {
    // SAFETY: advice on memory the caller owns; a collapse keeps contents.
    unsafe {
        // A range advised against huge pages cannot be collapsed.
        advise_huge_pages(p, size);
        let collapsed = libc::madvise(p.cast(), size, libc::MADV_COLLAPSE) == 0;
        advise_no_huge_pages(p, size);
        collapsed
    }
}

/// How many pages of `[p, p + size)` are resident (`mincore`); 0 if the
/// call fails.
///
/// # Safety
/// The range is page-aligned and mapped by the caller.
pub unsafe fn resident_pages(p: *mut u8, size: usize) -> usize {
    let page = page_size();
    let mut vec = [0u8; 512];
    let mut resident = 0;
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(vec.len() * page);
        // SAFETY: the range is mapped (caller); `vec` has a byte for each of
        // its `len / page` pages.
        if unsafe { libc::mincore(p.add(offset).cast(), len, vec.as_mut_ptr()) } != 0 {
            return 0;
        }
        resident += vec[..len.div_ceil(page)].iter().filter(|&&v| v & 1 != 0).count();
        offset += len;
    }
    resident
}

/// Asks the kernel not to back `[p, p + size)` with transparent huge pages,
/// even when THP is enabled system-wide ("always"). Errors are ignored.
///
/// # Safety
/// The range is page-aligned and mapped by the caller.
pub unsafe fn advise_no_huge_pages(p: *mut u8, size: usize) {
    // SAFETY: advice on memory the caller owns; it changes no contents.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_NOHUGEPAGE);
    }
}
