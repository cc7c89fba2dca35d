//! Allocation and free inside destructors that run at thread exit, both Rust
//! `thread_local!` destructors and a pthread key destructor that runs after
//! poolmalloc has handed the thread's heap back.

mod common;
use common::Block;
use poolmalloc::PoolMalloc;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

static TLS_DESTRUCTORS_RAN: AtomicUsize = AtomicUsize::new(0);
static KEY_DESTRUCTORS_RAN: AtomicUsize = AtomicUsize::new(0);

struct AllocatesOnDrop {
    held: Vec<Block>,
}

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        // Allocate fresh blocks of several classes, verify, free; also free
        // the blocks allocated while the thread ran.
        let fresh: Vec<Block> = (0..100).map(|i| Block::new(1 + i * 97, 8, i as u64)).collect();
        let text = format!("{} blocks", fresh.len());
        assert_eq!(text, "100 blocks");
        assert!(self.held.iter().all(Block::intact));
        self.held.clear();
        drop(fresh);
        TLS_DESTRUCTORS_RAN.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static HOLDER: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn thread_local_destructors_allocate_and_free() {
    let before = TLS_DESTRUCTORS_RAN.load(Ordering::SeqCst);
    let handles: Vec<_> = (0..32)
        .map(|t| {
            std::thread::spawn(move || {
                let held = (0..50).map(|i| Block::new(16 + i * 31, 16, t * 1000 + i as u64)).collect();
                HOLDER.with(|h| *h.borrow_mut() = Some(AllocatesOnDrop { held }));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(TLS_DESTRUCTORS_RAN.load(Ordering::SeqCst) - before, 32);
}

/// Runs after poolmalloc's own key destructor (keys run in creation order
/// and poolmalloc's key exists before this one is created): the heap is gone,
/// so allocations use the shared heap and frees of the thread's old blocks
/// are remote frees.
unsafe extern "C" fn late_destructor(value: *mut libc::c_void) {
    let block = unsafe { Box::from_raw(value.cast::<Block>()) };
    assert!(block.intact());
    let fresh: Vec<Block> = (0..64).map(|i| Block::new(1 + i * 200, 8, i as u64)).collect();
    drop(fresh);
    drop(block);
    KEY_DESTRUCTORS_RAN.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn allocation_after_the_heap_is_handed_back() {
    // Make sure poolmalloc's key is created first.
    drop(std::hint::black_box(Box::new(1u8)));
    let mut key: libc::pthread_key_t = 0;
    assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(late_destructor)) }, 0);
    let handles: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let block = Box::new(Block::new(100 + t * 10, 8, t as u64));
                let rc = unsafe { libc::pthread_setspecific(key, Box::into_raw(block).cast()) };
                assert_eq!(rc, 0);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(KEY_DESTRUCTORS_RAN.load(Ordering::SeqCst), 16);
    // Blocks freed to the shared heap and to handed-back heaps are reusable.
    poolmalloc::collect();
    let v: Vec<Block> = (0..1000).map(|i| Block::new(1 + i, 8, i as u64)).collect();
    drop(v);
}
