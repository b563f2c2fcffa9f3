//! Micro-benchmarks of the CPU work per message that does not touch a server: identity
//! extraction from header blocks and the planner's diff, on 100,000 synthetic messages.
//! Run: `cargo bench --bench planner`. The end-to-end benchmark is `bench/run.sh`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailferry::identity::{self, Identity};
use mailferry::index::{Flags, SourceMessage, TargetCopy, TargetIndex};
use mailferry::plan;

const MESSAGES: usize = 100_000;

/// Header blocks shaped like a target's `HEADER.FIELDS` answer; every 50th has no Message-ID.
fn headers() -> Vec<Vec<u8>> {
    (0..MESSAGES)
        .map(|i| {
            let id = if i % 50 == 0 {
                String::new()
            } else {
                format!("Message-ID: <{i}.{}@mail.example.com>\r\n", i * 7919)
            };
            format!(
                "{id}Date: Mon, 1 Jan 2024 10:{:02}:00 +0000\r\nFrom: Sender {} <s{}@example.org>\r\n\
                 To: someone@example.net\r\nSubject: Quarterly report, part {i}\r\n\
                 References: <{}.ref@mail.example.com>\r\n\r\n",
                i % 60,
                i % 97,
                i % 97,
                i / 2
            )
            .into_bytes()
        })
        .collect()
}

fn source_index(headers: &[Vec<u8>]) -> Vec<Arc<SourceMessage>> {
    let seen = Flags::from(["\\Seen".to_owned()]);
    headers
        .iter()
        .enumerate()
        .map(|(i, header)| {
            Arc::new(SourceMessage {
                key: i as u32 + 1,
                stable_id: None,
                identity: identity::identify(header),
                identity_remembered: false,
                size: 10_000,
                added: 0,
                flags: Arc::clone(&seen),
                internal_date: Default::default(),
            })
        })
        .collect()
}

fn benchmarks(c: &mut Criterion) {
    let headers = headers();
    let bytes: usize = headers.iter().map(Vec::len).sum();

    let mut group = c.benchmark_group("identity");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("identify 100k header blocks", |b| {
        b.iter(|| {
            headers
                .iter()
                .map(|h| identity::identify(black_box(h)))
                .filter(|id| matches!(id, Identity::Fingerprint(_)))
                .count()
        })
    });
    group.finish();

    let source = source_index(&headers);
    // The target already holds every other message.
    let mut target = TargetIndex::default();
    for (uid, message) in source.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        target.add(
            message.identity.clone(),
            TargetCopy {
                uid: uid as u32,
                size: message.size,
                flags: Flags::default(),
                internal_date: None,
            },
        );
    }
    let mut group = c.benchmark_group("planner");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(10);
    group.bench_function("diff 100k against 50k", |b| {
        b.iter(|| {
            plan::diff("INBOX", "INBOX", black_box(&source), &target)
                .to_copy
                .len()
        })
    });
    group.finish();
}

criterion_group!(planner, benchmarks);
criterion_main!(planner);
