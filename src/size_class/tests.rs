use super::*;

#[test]
fn sizes_are_increasing_and_granular() {
    for c in 1..CLASS_COUNT {
        assert!(CLASS_SIZE[c] > CLASS_SIZE[c - 1]);
        assert_eq!(CLASS_SIZE[c] as usize % MIN_ALIGN, 0);
    }
    assert_eq!(class_size(0), 8);
    assert_eq!(class_align(0), 8);
    assert_eq!(class_size(1), 16);
    assert_eq!(class_size(8), 128);
    assert_eq!(&CLASS_SIZE[9..13], &[160, 192, 224, 256]);
    assert_eq!(class_size(CLASS_COUNT - 1), 32 << 10);
}

#[test]
fn waste_is_bounded() {
    // Above 128 bytes four classes per doubling: block <= 1.25 x request.
    for size in 129..=MAX_SMALL_SIZE {
        let c = class_of_size(size).unwrap();
        assert!(class_size(c) * 4 <= size * 5 + 4 * MIN_ALIGN, "size {size}");
    }
}

/// Every size up to the largest class times every alignment up to 4 KiB: the
/// block fits, is aligned, and no smaller class would do.
#[test]
fn exhaustive_size_alignment_table() {
    for align_shift in 0..=12 {
        let align = 1usize << align_shift;
        for size in 0..=MAX_SMALL_SIZE {
            let got = class_for(size, align);
            let want = (0..CLASS_COUNT).find(|&c| class_size(c) >= size && class_align(c) >= align);
            assert_eq!(got, want, "size {size} align {align}");
            if let Some(c) = got {
                assert!(class_size(c) >= size.max(1));
                assert!(class_align(c) >= align);
            }
        }
    }
    assert_eq!(class_for(MAX_SMALL_SIZE + 1, 1), None);
    assert_eq!(class_for(16, POOL_SIZE * 2), None);
}

#[test]
fn spans_hold_blocks_with_little_waste() {
    for c in 0..CLASS_COUNT {
        let pools = class_span_pools(c);
        assert!((1..=MAX_SPAN_POOLS).contains(&pools));
        let bytes = pools * POOL_SIZE;
        let blocks = class_blocks_per_span(c);
        assert!(blocks >= MIN_BLOCKS_PER_SPAN, "class {c}");
        // The target count, or as many as a target-sized span holds.
        let want = if class_size(c) > TARGET_MAX_BLOCK_SIZE {
            MIN_BLOCKS_PER_SPAN
        } else {
            TARGET_BLOCKS_PER_SPAN.min(TARGET_SPAN_POOLS * POOL_SIZE / class_size(c))
        };
        assert!(blocks >= want, "class {c}: {blocks} blocks");
        let waste = bytes - blocks * class_size(c);
        assert!(waste * 8 <= bytes, "class {c} wastes {waste} of {bytes}");
        // Blocks in a span that starts on a pool boundary are aligned.
        assert_eq!(POOL_SIZE % class_align(c), 0);
    }
}

/// A span that starts at the header pool begins after the header: its blocks keep the
/// class's alignment, and only classes that promise more than the header's
/// alignment are kept out of the header pool. (Where the span wastes a page anyway,
/// it loses no block.)
#[test]
fn header_spans_keep_alignment_and_most_blocks() {
    use crate::config::HEADER_BYTES;
    for c in 0..CLASS_COUNT {
        let blocks = class_blocks_per_header_span(c);
        if class_align(c) > HEADER_BYTES {
            assert_eq!(blocks, 0, "class {c}");
            continue;
        }
        assert_eq!(HEADER_BYTES % class_align(c), 0, "class {c}");
        assert!(blocks >= 1 && blocks <= class_blocks_per_span(c), "class {c}: {blocks}");
        assert!(blocks * class_size(c) <= class_span_pools(c) * POOL_SIZE - HEADER_BYTES);
    }
    // The 16 KiB and 32 KiB classes are the ones kept out.
    let kept_out: Vec<usize> =
        (0..CLASS_COUNT).filter(|&c| class_blocks_per_header_span(c) == 0).map(class_size).collect();
    assert_eq!(kept_out, [8192, 16384, 24576, 32768]);
}

/// A thread's first span of a class is one pool for every class up to
/// `TARGET_MAX_BLOCK_SIZE` (the usual span of those up to 256 bytes is one
/// pool anyway), and that pool still holds a good number of blocks, at the
/// header pool too; above, it is the usual span.
#[test]
fn first_spans_are_one_pool_up_to_the_target_size() {
    use crate::config::HEADER_BYTES;
    for c in 0..CLASS_COUNT {
        let first = class_first_span_pools(c);
        if class_size(c) > TARGET_MAX_BLOCK_SIZE {
            assert_eq!(first, class_span_pools(c), "class {c}");
            continue;
        }
        assert_eq!(first, 1, "class {c}");
        assert!(span_blocks(c, 1, false) >= 16, "class {c}");
        assert!(span_blocks(c, 1, true) >= 12, "class {c}");
        assert!(span_blocks(c, 1, true) * class_size(c) <= POOL_SIZE - HEADER_BYTES);
    }
    // 512-byte blocks: usually 2 pools (64 blocks), first 1 pool (32 blocks).
    let c = (0..CLASS_COUNT).find(|&c| class_size(c) == 512).unwrap();
    assert_eq!((class_span_pools(c), class_blocks_per_span(c)), (2, 64));
    assert_eq!((class_first_span_pools(c), span_blocks(c, 1, false)), (1, 32));
}
