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

/// Sorting an available list by address (as each sweep does) leaves both
/// ends and every back link right, whatever order the pools joined in.
#[test]
fn sort_available_orders_by_address() {
    const N: usize = 37;
    let heap = Heap::new();
    let pools: Vec<Pool> = (0..N).map(|_| Pool::unused()).collect();
    let class = pools[0].class();
    // A fixed shuffle: (i * 17 + 5) mod 37 visits every index once.
    for i in 0..N {
        let pool = &pools[(i * 17 + 5) % N];
        pool.set_state(PoolState::Full);
        make_available(&heap, pool);
    }
    assert_ne!(heap.available[class].get(), at(&pools[0]), "the shuffle left the list sorted already");
    sort_available(&heap, class);
    let mut seen = Vec::new();
    let mut prev: *mut Pool = ptr::null_mut();
    let mut pool = heap.available[class].get();
    while !pool.is_null() {
        // SAFETY: the list holds the pools above, alive until the end.
        let p = unsafe { &*pool };
        assert_eq!(p.prev_available.get(), prev);
        seen.push(pool as usize);
        prev = pool;
        pool = p.next_available.get();
    }
    assert_eq!(heap.available_tail[class].get(), prev);
    let mut expected: Vec<usize> = pools.iter().map(|p| at(p) as usize).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    // One pool, and none: nothing to do.
    let single = Heap::new();
    pools[0].next_available.set(ptr::null_mut());
    pools[0].prev_available.set(ptr::null_mut());
    make_available(&single, &pools[0]);
    sort_available(&single, class);
    assert_eq!(single.available[class].get(), at(&pools[0]));
    assert_eq!(single.available_tail[class].get(), at(&pools[0]));
    sort_available(&Heap::new(), class);
}

/// A sweep (thread exit, `collect`) leaves the available lists sorted.
#[test]
fn sweep_sorts_available_lists() {
    let heap = Heap::new();
    let pools: Vec<Pool> = (0..5).map(|_| Pool::unused()).collect();
    let class = pools[0].class();
    for i in [3, 0, 4, 1, 2] {
        pools[i].set_state(PoolState::Full);
        make_available(&heap, &pools[i]);
    }
    // No active or kept pool: the sweep returns nothing to the arenas.
    sweep(&heap);
    let mut order = Vec::new();
    let mut pool = heap.available[class].get();
    while !pool.is_null() {
        order.push(pool);
        // SAFETY: the list holds the pools above, alive until the end.
        pool = unsafe { (*pool).next_available.get() };
    }
    assert_eq!(order, pools.iter().map(at).collect::<Vec<_>>());
}

/// The idle list is a queue: the heap idle longest is adopted first, and
/// taking the heaps with pending frees off it (the purger's pass) hands
/// them over in list order and keeps the tail right for the heaps released
/// after, including when it takes every heap.
#[test]
fn idle_heaps_are_adopted_oldest_first() {
    let list = IdleList::new();
    // Records of the test's own, not cut by `acquire`: those would join the
    // process's registry of heaps.
    let [a, b, c, d] = [(); 4].map(|()| ptr::from_mut(Box::leak(Box::new(Heap::new()))));
    let is_empty = |list: &IdleList| {
        let idle = list.0.lock();
        idle.head.is_null() && idle.tail.is_null()
    };
    let give_pending = |heap: *mut Heap, pool: &Pool| {
        // SAFETY: leaked records live for the whole program.
        unsafe { (*heap).pending.push(pool) };
    };
    let clear_pending = |heap: *mut Heap| {
        // SAFETY: as above.
        unsafe { (*heap).pending.take_all().for_each(drop) };
    };
    let taken_in_order = |mut heap: *mut Heap| {
        let mut order = Vec::new();
        while !heap.is_null() {
            order.push(heap);
            // SAFETY: as above.
            heap = unsafe { (*heap).next_idle.replace(ptr::null_mut()) };
        }
        order
    };
    for heap in [a, b, c] {
        list.release(heap);
    }
    assert_eq!(list.acquire(), a);
    list.release(a);
    assert_eq!([list.acquire(), list.acquire(), list.acquire()], [b, c, a]);
    assert!(is_empty(&list));

    // The tail has a remote free waiting: the pass takes it alone, and a
    // heap released afterwards goes behind b, not behind c.
    let pools: Vec<Pool> = (0..4).map(|_| Pool::unused()).collect();
    for heap in [a, b, c] {
        list.release(heap);
    }
    give_pending(c, &pools[0]);
    assert_eq!(taken_in_order(list.take_with_pending()), [c]);
    clear_pending(c);
    list.release(d);
    assert_eq!([list.acquire(), list.acquire(), list.acquire()], [a, b, d]);
    assert!(is_empty(&list));

    // Two of four taken, in list order; the two left keep theirs.
    for heap in [a, b, c, d] {
        list.release(heap);
    }
    give_pending(a, &pools[0]);
    give_pending(c, &pools[1]);
    assert_eq!(taken_in_order(list.take_with_pending()), [a, c]);
    clear_pending(a);
    clear_pending(c);
    list.release(a);
    assert_eq!([list.acquire(), list.acquire(), list.acquire()], [b, d, a]);
    assert!(is_empty(&list));

    // Every heap taken: the list is empty, and the next heap released is
    // its only one.
    for (heap, pool) in [a, b].into_iter().zip(&pools) {
        list.release(heap);
        give_pending(heap, pool);
    }
    assert_eq!(taken_in_order(list.take_with_pending()), [a, b]);
    clear_pending(a);
    clear_pending(b);
    assert!(is_empty(&list));
    list.release(d);
    assert_eq!(list.acquire(), d);
    assert!(is_empty(&list));
}
