use super::*;
use crate::config::POOL_SIZE;
use crate::size_class::{CLASS_COUNT, class_blocks_per_span, class_size, class_span_pools};

/// A span-sized, pool-aligned buffer owned by the test.
struct Span {
    memory: Vec<u8>,
}

impl Span {
    fn new(pools: usize) -> Self {
        Span { memory: vec![0u8; (pools + 1) * POOL_SIZE] }
    }
    fn start(&mut self) -> *mut u8 {
        let addr = self.memory.as_mut_ptr() as usize;
        addr.next_multiple_of(POOL_SIZE) as *mut u8
    }
}

#[test]
fn carve_pop_push_keep_the_invariant() {
    for class in 0..CLASS_COUNT {
        let mut span = Span::new(class_span_pools(class));
        let pool = Pool::unused();
        pool.init(class, span.start(), class_blocks_per_span(class), class_span_pools(class), 1);
        pool.check();
        let capacity = class_blocks_per_span(class);
        let mut blocks = Vec::new();
        while !pool.free.get().is_null() || pool.carve() {
            // SAFETY: the free list is not empty.
            let b = unsafe { pool.pop() };
            assert!(pool.block_index(b).is_some());
            assert_eq!(b as usize % crate::size_class::class_align(class), 0);
            blocks.push(b);
            pool.check();
        }
        assert_eq!(blocks.len(), capacity, "class {class}");
        let mut sorted = blocks.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), capacity, "a block was handed out twice");
        for w in sorted.windows(2) {
            assert!(w[1] as usize - w[0] as usize >= class_size(class));
        }
        assert!(!pool.carve());
        // Free half locally, half remotely, then drain.
        for (i, &b) in blocks.iter().enumerate() {
            // SAFETY: each block was handed out above and is freed once.
            unsafe {
                if i % 2 == 0 {
                    pool.push_local(b);
                } else {
                    pool.push_remote(b).unwrap();
                }
            }
        }
        assert_eq!(pool.blocks_out() as usize, capacity / 2);
        assert_eq!(pool.take_remote(), capacity / 2);
        assert!(pool.is_unused());
        // Active: the bias keeps the counter above zero.
        assert!(!pool.needs_attention());
        pool.check();
        pool.set_state(PoolState::Available);
        assert!(pool.needs_attention());
        pool.retire();
    }
}

#[test]
fn remote_push_reports_the_first_push_only() {
    let mut span = Span::new(1);
    let pool = Pool::unused();
    pool.init(0, span.start(), class_blocks_per_span(0), class_span_pools(0), 1);
    pool.carve();
    // SAFETY: the free list has blocks; each is freed once.
    unsafe {
        let a = pool.pop();
        let b = pool.pop();
        assert!(pool.push_remote(a).unwrap().was_empty);
        assert!(!pool.push_remote(b).unwrap().was_empty);
        assert_eq!(pool.take_remote(), 2);
        assert!(pool.free_list_contains(a) && pool.free_list_contains(b));
    }
    assert_eq!(pool.take_remote(), 0);
}

/// A pool of the largest class (four blocks) with every block handed out
/// and the pool made Full, as the refill path leaves it.
fn full_pool(span: &mut Span) -> (Pool, Vec<*mut u8>) {
    let class = CLASS_COUNT - 1;
    let pool = Pool::unused();
    pool.init(class, span.start(), class_blocks_per_span(class), class_span_pools(class), 1);
    let mut held = Vec::new();
    while !pool.free.get().is_null() || pool.carve() {
        // SAFETY: the free list is not empty.
        held.push(unsafe { pool.pop() });
    }
    pool.set_state(PoolState::Full);
    (pool, held)
}

#[test]
fn the_push_that_fills_the_list_reports_it_complete() {
    let mut span = Span::new(class_span_pools(CLASS_COUNT - 1));
    let (pool, held) = full_pool(&mut span);
    // SAFETY: each block was handed out and is freed once: two chains.
    unsafe {
        for b in &held[..2] {
            let pushed = pool.push_remote(*b).unwrap();
            assert!(!pushed.complete);
        }
        assert!(!pool.mark_stranded(), "an incomplete list is not stranded");
        let (head, tail) = (held[2].cast::<Block>(), held[3].cast::<Block>());
        (*head).next = tail;
        let pushed = pool.push_remote_chain(head, tail, 2).unwrap();
        assert!(pushed.complete && !pushed.was_empty);
        // Every block is free: one more push is a double free, and pushes
        // nothing.
        assert!(pool.push_remote(held[0]).is_err());
    }
    // Not seen yet: no claim.
    assert!(!pool.claim_stranded());
    assert!(pool.mark_stranded());
    assert!(!pool.mark_stranded(), "marked once");
    // The owner comes back first: it takes the list as usual, flags aside.
    assert_eq!(pool.take_remote(), 4);
    for b in &held {
        assert!(pool.free_list_contains(*b));
    }
    assert!(pool.is_unused());
    assert!(!pool.claim_stranded());
    pool.check();
}

#[test]
fn a_stranded_pool_is_purged_and_carved_afresh() {
    let mut span = Span::new(class_span_pools(CLASS_COUNT - 1));
    for owner_swaps_meanwhile in [false, true] {
        let (pool, held) = full_pool(&mut span);
        // SAFETY: each block was handed out and is freed once.
        unsafe {
            for b in &held {
                pool.push_remote(*b).unwrap();
            }
        }
        assert!(pool.mark_stranded());
        assert!(pool.claim_stranded());
        assert!(!pool.claim_stranded(), "claimed once");
        assert!(!pool.mark_stranded());
        if owner_swaps_meanwhile {
            // The owner finds the purge under way: nothing taken, and the
            // purger must put the pool on its pending list again.
            assert_eq!(pool.take_remote(), 0);
            assert_eq!(pool.blocks_out(), 4);
        }
        assert_eq!(pool.end_stranded_purge(), owner_swaps_meanwhile);
        // SAFETY: every block is free (and purged): a push is a double free.
        assert!(unsafe { pool.push_remote(held[0]) }.is_err());
        // Every block back, none listed: the pool forgets them.
        assert_eq!(pool.take_remote(), 4);
        assert!(pool.is_unused());
        assert!(pool.needs_attention(), "a Full pool with every block back needs the slow path");
        assert!(pool.free.get().is_null() && pool.local_free.get().is_null());
        pool.check();
        assert_eq!(pool.take_remote(), 0);
        // Kept now, it is kept clean: the purger need not purge it again.
        pool.set_state(PoolState::Available);
        pool.keep(1);
        assert_eq!(pool.claim_kept(), Some(true));
        // Carved afresh, it hands out every block again.
        pool.set_state(PoolState::Active);
        let mut again = Vec::new();
        while !pool.free.get().is_null() || pool.carve() {
            // SAFETY: the free list is not empty.
            again.push(unsafe { pool.pop() });
        }
        again.sort();
        let mut expected = held.clone();
        expected.sort();
        assert_eq!(again, expected);
        pool.check();
        for b in again {
            // SAFETY: handed out above, freed once.
            unsafe { pool.push_local(b) };
        }
        // Carved since the purge: kept dirty.
        pool.set_state(PoolState::Available);
        pool.keep(2);
        assert_eq!(pool.claim_kept(), Some(false));
        pool.retire();
    }
}

#[test]
fn the_counter_flags_full_and_unused_pools() {
    // The largest class: four blocks to a span.
    let class = CLASS_COUNT - 1;
    let mut span = Span::new(class_span_pools(class));
    let pool = Pool::unused();
    pool.init(class, span.start(), class_blocks_per_span(class), class_span_pools(class), 1);
    let mut held = Vec::new();
    while !pool.free.get().is_null() || pool.carve() {
        // SAFETY: the free list is not empty.
        held.push(unsafe { pool.pop() });
    }
    assert_eq!(held.len(), 4);
    assert_eq!(pool.blocks_out(), 4);
    // SAFETY: every block was handed out above; each free matches one pop.
    unsafe {
        // Active: frees never need attention.
        let a = held.pop().unwrap();
        assert!(!pool.push_local(a));
        assert!(pool.take_local());
        let a = pool.pop();
        // Exhausted, the refill path makes it Full: the first free needs
        // attention.
        pool.set_state(PoolState::Full);
        assert_eq!(pool.blocks_out(), 4);
        assert!(pool.push_local(a));
        pool.set_state(PoolState::Available);
        assert!(!pool.needs_attention());
        assert_eq!(pool.blocks_out(), 3);
        // Available: only the last free needs attention (the pool is unused).
        assert!(!pool.push_local(held.pop().unwrap()));
        assert!(!pool.push_local(held.pop().unwrap()));
        assert!(pool.push_local(held.pop().unwrap()));
        assert!(pool.is_unused());
    }
    pool.check();
}
