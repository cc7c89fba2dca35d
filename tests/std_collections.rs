//! Ordinary std code running on poolmalloc: collections, strings, formatting,
//! panics caught with `catch_unwind`, zeroed and resized memory.

use poolmalloc::PoolMalloc;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

#[global_allocator]
static A: PoolMalloc = PoolMalloc::new();

#[test]
fn collections_hold_their_contents() {
    let mut map: HashMap<u64, String> = HashMap::new();
    let mut tree: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut deque = VecDeque::new();
    for i in 0..50_000u64 {
        map.insert(i, format!("value-{i}-{}", i * 3));
        tree.entry(format!("key{}", i % 997)).or_default().push(i as u32);
        deque.push_back(vec![i as u8; (i % 300) as usize]);
        if deque.len() > 1000 {
            let v = deque.pop_front().unwrap();
            assert!(v.iter().all(|&b| b == v.first().copied().unwrap_or(0)));
        }
    }
    for i in (0..50_000u64).step_by(7) {
        assert_eq!(map[&i], format!("value-{i}-{}", i * 3));
    }
    assert_eq!(tree.len(), 997);
    let total: usize = tree.values().map(Vec::len).sum();
    assert_eq!(total, 50_000);
    for (k, v) in &tree {
        let r: u64 = k[3..].parse().unwrap();
        assert!(v.iter().all(|&x| u64::from(x) % 997 == r));
    }
    map.retain(|k, _| k % 2 == 0);
    assert_eq!(map.len(), 25_000);
    let set: HashSet<String> = map.into_values().collect();
    assert_eq!(set.len(), 25_000);
}

#[test]
fn strings_and_formatting() {
    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&i.to_string());
        s.push(' ');
    }
    let words: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(words.len(), 10_000);
    let mut sorted: Vec<String> = words.iter().map(|w| w.chars().rev().collect()).collect();
    sorted.sort();
    let joined = sorted.join(",");
    assert_eq!(joined.matches(',').count(), 9_999);
    assert_eq!(format!("{:>8}|{:<5}|{:x}", "ab", 7, 255), "      ab|7    |ff");
}

#[test]
fn panics_are_caught_on_the_allocator() {
    for i in 0..200 {
        let result = std::panic::catch_unwind(|| {
            let v = vec![i; 100];
            panic!("panic number {} with {} items", i, v.len());
        });
        let payload = result.unwrap_err();
        let message = payload.downcast_ref::<String>().unwrap();
        assert_eq!(message, &format!("panic number {i} with 100 items"));
    }
}

#[test]
fn zeroed_memory_is_zero_even_when_reused() {
    for round in 0..3 {
        let dirty: Vec<Vec<u8>> = (1..200).map(|n| vec![0xAB; n * 37]).collect();
        drop(dirty);
        for n in 1..200 {
            let v = vec![0u8; n * 37 + round];
            assert!(v.iter().all(|&b| b == 0));
        }
        let big = vec![0u64; 1 << 20];
        assert!(big.iter().all(|&x| x == 0));
    }
}

#[test]
fn boxes_and_rc_cycles_of_many_sizes() {
    use std::rc::Rc;
    let boxes: Vec<Box<[u8]>> = (0..5000).map(|i| vec![(i % 251) as u8; i % 3000].into_boxed_slice()).collect();
    for (i, b) in boxes.iter().enumerate() {
        assert!(b.iter().all(|&x| x == (i % 251) as u8));
    }
    let shared: Vec<Rc<String>> = (0..1000).map(|i| Rc::new(i.to_string())).collect();
    let clones: Vec<Rc<String>> = shared.iter().cycle().take(5000).cloned().collect();
    assert_eq!(Rc::strong_count(&shared[0]), 6);
    drop(clones);
    assert_eq!(Rc::strong_count(&shared[0]), 1);
}

#[test]
fn usable_size_covers_the_request() {
    for size in [1usize, 15, 16, 17, 100, 1000, 4096, 32768, 32769, 100_000, 5 << 20] {
        let v: Vec<u8> = Vec::with_capacity(size);
        let usable = unsafe { poolmalloc::usable_size(v.as_ptr()) };
        assert!(usable >= size, "usable {usable} < {size}");
        assert!(usable < size + size / 4 + 4096, "usable {usable} for {size}");
    }
}
