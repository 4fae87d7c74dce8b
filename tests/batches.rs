//! Seeded shuffled mini-batches: every sample once per epoch, reproducible orders.

use ndarray::Array2;
use phm_nn::data::{digits, Batches, Dataset};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `n` samples; row `i` is `[i, -i]` with label `i % 3`, so each row tells which sample it is.
fn numbered(n: usize) -> Dataset<f64> {
    let x = Array2::from_shape_fn((n, 2), |(i, j)| if j == 0 { i as f64 } else { -(i as f64) });
    Dataset::new(x, (0..n).map(|i| i % 3).collect()).unwrap()
}

fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Checks each batch holds the rows and labels its indices name; returns the indices.
fn visit(batches: Batches<'_, f64>) -> (Vec<usize>, Vec<usize>) {
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    for batch in batches {
        assert_eq!(batch.x.ncols(), 2);
        assert_eq!(batch.x.nrows(), batch.indices.len());
        for (r, &i) in batch.indices.iter().enumerate() {
            assert_eq!(batch.x.row(r).to_vec(), [i as f64, -(i as f64)]);
            assert_eq!(batch.y[r], i % 3);
        }
        sizes.push(batch.indices.len());
        seen.extend(batch.indices);
    }
    (sizes, seen)
}

#[test]
fn every_sample_exactly_once_per_epoch_last_partial_batch_kept() {
    let data = numbered(23);
    let batches = data.batches(5, &mut seeded(1)).unwrap();
    assert_eq!(batches.len(), 5);
    let (sizes, mut seen) = visit(batches);
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    assert_ne!(seen, (0..23).collect::<Vec<_>>(), "shuffled, not in order");
    seen.sort_unstable();
    assert_eq!(seen, (0..23).collect::<Vec<_>>());
}

#[test]
fn drop_last_skips_only_the_partial_batch() {
    let data = numbered(23);
    let batches = data.batches(5, &mut seeded(1)).unwrap().drop_last(true);
    assert_eq!(batches.len(), 4);
    let order = batches.order().to_vec();
    let (sizes, seen) = visit(batches);
    assert_eq!(sizes, [5, 5, 5, 5]);
    assert_eq!(seen, order[..20]);
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 20);

    // An exact multiple loses nothing.
    let (sizes, _) = visit(Batches::in_order(&numbered(10), 5).unwrap().drop_last(true));
    assert_eq!(sizes, [5, 5]);
}

#[test]
fn same_seed_same_order_new_epochs_new_orders() {
    let data = numbered(50);
    let order = |seed| data.batches(8, &mut seeded(seed)).unwrap().order().to_vec();
    assert_eq!(order(7), order(7));
    assert_ne!(order(7), order(8));

    // The iterator yields batches in the order it reports.
    let batches = data.batches(8, &mut seeded(7)).unwrap();
    let reported = batches.order().to_vec();
    assert_eq!(visit(batches).1, reported);

    // One generator over several epochs: each epoch reshuffles, and the sequence of epochs
    // is reproducible.
    let epochs = |seed| {
        let mut rng = seeded(seed);
        (0..3)
            .map(|_| data.batches(8, &mut rng).unwrap().order().to_vec())
            .collect::<Vec<_>>()
    };
    let first = epochs(11);
    assert_ne!(first[0], first[1]);
    assert_ne!(first[1], first[2]);
    assert_eq!(first, epochs(11));
}

#[test]
fn in_order_batches_follow_the_rows() {
    let (sizes, seen) = visit(Batches::in_order(&numbered(7), 3).unwrap());
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn len_counts_the_batches_left() {
    let data = numbered(10);
    let mut batches = Batches::in_order(&data, 4).unwrap();
    assert_eq!(batches.len(), 3);
    batches.next();
    assert_eq!(batches.len(), 2);
    batches.next();
    batches.next();
    assert_eq!(batches.len(), 0);
    assert!(batches.next().is_none());
}

#[test]
fn batch_larger_than_the_data_and_empty_data() {
    let data = numbered(3);
    let (sizes, _) = visit(data.batches(10, &mut seeded(0)).unwrap());
    assert_eq!(sizes, [3]);
    assert_eq!(
        data.batches(10, &mut seeded(0))
            .unwrap()
            .drop_last(true)
            .count(),
        0
    );
    assert_eq!(numbered(0).batches(4, &mut seeded(0)).unwrap().count(), 0);
}

#[test]
fn zero_batch_size_is_an_error() {
    let data = numbered(3);
    let err = data.batches(0, &mut seeded(0)).unwrap_err();
    assert_eq!(err.to_string(), "batch_size must be at least 1, got 0");
    assert!(Batches::in_order(&data, 0).is_err());
}

#[test]
fn digits_in_batches_of_64() {
    let data = digits::bundled::<f32>().unwrap();
    let sizes: Vec<usize> = data
        .batches(64, &mut seeded(5))
        .unwrap()
        .map(|b| b.y.len())
        .collect();
    // 1797 = 28 · 64 + 5
    assert_eq!(sizes.len(), 29);
    assert!(sizes[..28].iter().all(|&s| s == 64));
    assert_eq!(sizes[28], 5);
}
