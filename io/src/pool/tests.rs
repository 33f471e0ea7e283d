use std::time::Duration;

use tokio::time::timeout;

use super::*;

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(20);

fn assert_send_static<T: Send + 'static>() {}

#[test]
fn chunk_is_send_and_static() {
    assert_send_static::<Chunk>();
    assert_send_static::<ChunkPool>();
}

#[test]
fn new_validates_and_rounds() {
    let pool = ChunkPool::new(1, 3).unwrap();
    assert_eq!(pool.chunk_size(), 4096);
    assert_eq!(pool.capacity(), 3);
    assert_eq!(pool.available(), 3);
    assert_eq!(ChunkPool::new(4097, 1).unwrap().chunk_size(), 8192);
    assert_eq!(ChunkPool::new(8192, 1).unwrap().chunk_size(), 8192);
    assert!(matches!(ChunkPool::new(0, 1), Err(IoError::InvalidPool(_))));
    assert!(matches!(ChunkPool::new(4096, 0), Err(IoError::InvalidPool(_))));
    assert!(matches!(ChunkPool::new(usize::MAX, 2), Err(IoError::InvalidPool(_))));
    assert!(matches!(
        ChunkPool::new(1 << 40, 1 << 30),
        Err(IoError::InvalidPool(_) | IoError::Alloc { .. })
    ));
}

#[tokio::test]
async fn chunks_are_page_aligned_and_disjoint() {
    let pool = ChunkPool::new(4096, 8).unwrap();
    let chunks = pool.acquire_many(8).await.unwrap();
    let mut starts: Vec<usize> = chunks.iter().map(|c| c.as_ptr() as usize).collect();
    for s in &starts {
        assert_eq!(s % 4096, 0);
    }
    starts.sort_unstable();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 4096);
    }
}

#[tokio::test]
async fn chunk_fill_semantics() {
    let pool = ChunkPool::new(4096, 1).unwrap();
    let mut c = pool.acquire().await;
    assert_eq!(c.capacity(), 4096);
    assert!(c.is_empty());
    assert_eq!(c.len(), 0);
    assert_eq!(c.remaining(), 4096);
    assert_eq!(c.extend_from_slice(b"hello"), 5);
    assert_eq!(c.as_slice(), b"hello");
    assert_eq!(c.remaining(), 4091);
    let big = vec![7u8; 5000];
    assert_eq!(c.extend_from_slice(&big), 4091);
    assert_eq!(c.len(), 4096);
    assert_eq!(c.remaining(), 0);
    assert_eq!(c.extend_from_slice(b"x"), 0);
    assert_eq!(&c.as_slice()[..5], b"hello");
    assert!(c.as_slice()[5..].iter().all(|&b| b == 7));
    c.clear();
    assert!(c.is_empty());
    assert_eq!(c.as_slice(), b"");
    assert_eq!(format!("{c:?}"), "Chunk { index: 0, len: 0, capacity: 4096 }");
}

#[tokio::test]
async fn chunk_fills_in_place_through_spare_mut() {
    let pool = ChunkPool::new(4096, 1).unwrap();
    let mut c = pool.acquire().await;
    c.extend_from_slice(b"ab");
    assert_eq!(c.spare_mut().len(), 4094);
    c.spare_mut()[..3].copy_from_slice(b"cde");
    c.advance(3);
    assert_eq!(c.as_slice(), b"abcde");
    c.advance(10_000);
    assert_eq!(c.len(), 4096);
    assert!(c.spare_mut().is_empty());
}

#[tokio::test]
async fn chunks_return_on_drop() {
    let pool = ChunkPool::new(4096, 3).unwrap();
    let a = pool.acquire().await;
    let b = pool.acquire().await;
    assert_eq!(pool.available(), 1);
    drop(a);
    assert_eq!(pool.available(), 2);
    drop(b);
    assert_eq!(pool.available(), 3);
    assert!(pool.try_acquire().is_some());
    assert_eq!(pool.available(), 3);
}

#[tokio::test]
async fn try_acquire_respects_budget() {
    let pool = ChunkPool::new(4096, 2).unwrap();
    let a = pool.try_acquire().unwrap();
    let _b = pool.try_acquire().unwrap();
    assert!(pool.try_acquire().is_none());
    drop(a);
    assert!(pool.try_acquire().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_blocks_at_budget_and_resumes_on_release() {
    let pool = ChunkPool::new(4096, 2).unwrap();
    let a = pool.acquire().await;
    let _b = pool.acquire().await;
    assert_eq!(pool.available(), 0);

    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.acquire().await });
    tokio::time::sleep(SHORT).await;
    assert!(!waiter.is_finished(), "acquire must wait while the pool is empty");

    drop(a);
    let c = timeout(LONG, waiter).await.unwrap().unwrap();
    assert_eq!(pool.available(), 0);
    drop(c);
    assert_eq!(pool.available(), 1);
}

#[tokio::test]
async fn freeze_returns_chunk_when_last_clone_drops() {
    let pool = ChunkPool::new(4096, 2).unwrap();
    let mut c = pool.acquire().await;
    c.extend_from_slice(b"frozen data");
    let bytes = c.freeze();
    assert_eq!(&bytes[..], b"frozen data");
    assert_eq!(pool.available(), 1);

    let clone1 = bytes.clone();
    let slice = bytes.slice(7..);
    drop(bytes);
    assert_eq!(pool.available(), 1);
    assert_eq!(&slice[..], b"data");
    drop(clone1);
    assert_eq!(pool.available(), 1);
    drop(slice);
    assert_eq!(pool.available(), 2);

    // An empty chunk goes back immediately.
    let empty = pool.acquire().await.freeze();
    assert!(empty.is_empty());
    assert_eq!(pool.available(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_bytes_cross_threads() {
    let pool = ChunkPool::new(4096, 4).unwrap();
    let mut c = pool.acquire().await;
    c.extend_from_slice(&[42u8; 4096]);
    let bytes = c.freeze();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = bytes.clone();
            std::thread::spawn(move || b.iter().all(|&x| x == 42))
        })
        .collect();
    drop(bytes);
    for h in handles {
        assert!(h.join().unwrap());
    }
    assert_eq!(pool.available(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_holder_returns_chunks() {
    let pool = ChunkPool::new(4096, 4).unwrap();
    let p = pool.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn(async move {
        let chunks = p.acquire_many(3).await.unwrap();
        let _ = tx.send(());
        std::future::pending::<()>().await;
        drop(chunks);
    });
    rx.await.unwrap();
    assert_eq!(pool.available(), 1);
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert_eq!(pool.available(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_waiters_leaks_nothing() {
    let pool = ChunkPool::new(4096, 4).unwrap();
    let held = pool.acquire_many(3).await.unwrap();
    // One waiter for many (gets the free chunk reserved for it while waiting), one for one.
    let p = pool.clone();
    let many = tokio::spawn(async move { p.acquire_many(4).await });
    tokio::time::sleep(SHORT).await;
    let p = pool.clone();
    let one = tokio::spawn(async move { p.acquire().await });
    tokio::time::sleep(SHORT).await;
    assert!(!many.is_finished() && !one.is_finished());
    many.abort();
    one.abort();
    let _ = many.await;
    let _ = one.await;
    drop(held);
    assert_eq!(pool.available(), 4);
    assert_eq!(pool.acquire_many(4).await.unwrap().len(), 4);

    // A timed-out acquire is the same as a cancelled one.
    let all = pool.acquire_many(4).await.unwrap();
    assert!(timeout(SHORT, pool.acquire()).await.is_err());
    drop(all);
    assert_eq!(pool.available(), 4);
}

#[tokio::test]
async fn acquire_many_edge_cases() {
    let pool = ChunkPool::new(4096, 4).unwrap();
    assert!(pool.acquire_many(0).await.unwrap().is_empty());
    match pool.acquire_many(5).await {
        Err(IoError::PoolTooSmall { needed, capacity }) => {
            assert_eq!((needed, capacity), (5, 4));
        }
        other => panic!("expected PoolTooSmall, got {other:?}"),
    }
    let all = pool.acquire_many(4).await.unwrap();
    assert_eq!(all.len(), 4);
    let mut idx: Vec<usize> = all.iter().map(|c| c.index()).collect();
    idx.sort_unstable();
    assert_eq!(idx, vec![0, 1, 2, 3]);
    assert_eq!(pool.available(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_many_is_all_or_nothing_and_fifo() {
    let pool = ChunkPool::new(4096, 4).unwrap();
    let mut held = pool.acquire_many(2).await.unwrap();

    let p = pool.clone();
    let many = tokio::spawn(async move { p.acquire_many(3).await.unwrap() });
    tokio::time::sleep(SHORT).await;
    assert!(!many.is_finished());

    // Queued behind the multi-chunk waiter: must not jump ahead even though chunks are free.
    let p = pool.clone();
    let single = tokio::spawn(async move { p.acquire().await });
    tokio::time::sleep(SHORT).await;
    assert!(
        !single.is_finished(),
        "FIFO: single acquire must wait behind acquire_many"
    );

    held.pop();
    let three = timeout(LONG, many).await.unwrap().unwrap();
    assert_eq!(three.len(), 3);
    tokio::time::sleep(SHORT).await;
    assert!(!single.is_finished());

    drop(three);
    let one = timeout(LONG, single).await.unwrap().unwrap();
    drop(one);
    drop(held);
    assert_eq!(pool.available(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_many_does_not_deadlock() {
    let pool = ChunkPool::new(4096, 5).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let p = pool.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let n = 2 + (t + i) % 3; // 2..=4 chunks at once
                    let chunks = p.acquire_many(n).await.unwrap();
                    assert_eq!(chunks.len(), n);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        timeout(LONG, t).await.expect("deadlock").unwrap();
    }
    assert_eq!(pool.available(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contents_intact_across_tasks_and_no_leak_after_many_cycles() {
    let pool = ChunkPool::new(4096, 8).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u32, Bytes)>(4);
    let producer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..5000u32 {
                let mut c = pool.acquire().await;
                let len = 1 + (i as usize * 37) % 4096;
                let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                assert_eq!(c.extend_from_slice(&data), len);
                if tx.send((i, c.freeze())).await.is_err() {
                    break;
                }
            }
        })
    };
    let consumer = tokio::spawn(async move {
        let mut seen = 0u32;
        while let Some((i, bytes)) = rx.recv().await {
            let len = 1 + (i as usize * 37) % 4096;
            assert_eq!(bytes.len(), len);
            for (j, &b) in bytes.iter().enumerate() {
                assert_eq!(b, (i as usize + j) as u8);
            }
            seen += 1;
        }
        seen
    });
    timeout(LONG, producer).await.unwrap().unwrap();
    assert_eq!(timeout(LONG, consumer).await.unwrap().unwrap(), 5000);
    assert_eq!(pool.available(), 8);
    // All chunks still usable.
    assert_eq!(pool.acquire_many(8).await.unwrap().len(), 8);
}
