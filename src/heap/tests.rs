use super::*;

fn at(pool: &Pool) -> *mut Pool {
    ptr::from_ref(pool).cast_mut()
}

/// The refill takes the head of the available list, so the head must be the
/// pool that became available first; unlinking from either end keeps both
/// ends right.
#[test]
fn available_list_is_oldest_first() {
    let heap = Heap::new();
    let pools: Vec<Pool> = (0..3).map(|_| Pool::unused()).collect();
    let class = pools[0].class();
    for pool in &pools {
        pool.set_state(PoolState::Full);
        make_available(&heap, pool);
    }
    assert_eq!(heap.available[class].get(), at(&pools[0]));
    assert_eq!(heap.available_tail[class].get(), at(&pools[2]));
    unlink_available(&heap, &pools[0]);
    assert_eq!(heap.available[class].get(), at(&pools[1]));
    unlink_available(&heap, &pools[2]);
    assert_eq!(heap.available_tail[class].get(), at(&pools[1]));
    assert!(pools[1].next_available.get().is_null() && pools[1].prev_available.get().is_null());
    unlink_available(&heap, &pools[1]);
    assert!(heap.available[class].get().is_null());
    assert!(heap.available_tail[class].get().is_null());
}
