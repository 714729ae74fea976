//! Tests of the durable outbox (`store.rs`): replay, torn tails, compaction, and a real
//! `kill -9` of a process that was writing it.

use super::*;

fn open(dir: &Path, d: Durability) -> (Outbox, Recovery) {
    Outbox::open(dir, d, 1 << 20).unwrap()
}

fn seqs(r: &Recovery) -> Vec<u64> {
    r.pending.iter().map(|p| p.seq).collect()
}

#[test]
fn committed_alerts_not_done_are_replayed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut o, r) = open(dir.path(), Durability::Fsync);
    assert_eq!(r, Recovery::default());
    for i in 0..5u8 {
        o.append(
            b"devices/gw:01@plant/modules/m/messages/events/%24.on=output1",
            &[i; 3],
        )
        .unwrap();
        o.commit().unwrap();
    }
    assert_eq!(o.syncs, 5);
    o.done(0).unwrap();
    o.done(2).unwrap(); // in order: 1 and 2 are done too
    assert_eq!(o.pending(), 2);
    // Not committed: not durable, not replayed.
    o.append(b"t", b"uncommitted").unwrap();
    drop(o);
    let (mut o, r) = open(dir.path(), Durability::Fsync);
    assert_eq!(seqs(&r), [3, 4]);
    assert_eq!(r.pending[0].payload, [3; 3]);
    assert_eq!(
        r.pending[0].topic,
        b"devices/gw:01@plant/modules/m/messages/events/%24.on=output1"
    );
    assert_eq!(r.truncated_bytes, 0);
    // Sequence numbers go on after the replayed ones.
    assert_eq!(o.append(b"t", b"x").unwrap(), 5);
}

#[test]
fn a_torn_or_corrupt_tail_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut o, _) = open(dir.path(), Durability::Written);
    for i in 0..3u8 {
        o.append(b"t", &[i]).unwrap();
    }
    o.commit().unwrap();
    assert_eq!(o.syncs, 0, "Written never syncs");
    let good = o.file_len();
    drop(o);
    let path = dir.path().join(FILE_NAME);
    // Half a record, as a crash in the middle of a write leaves it.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes[bytes.len() - 20..].to_vec();
    bytes.extend_from_slice(&last[..7]);
    std::fs::write(&path, &bytes).unwrap();
    let (o, r) = open(dir.path(), Durability::Written);
    assert_eq!(seqs(&r), [0, 1, 2]);
    assert_eq!(r.truncated_bytes, 7);
    assert_eq!(o.file_len(), good);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    drop(o);
    // A flipped bit in the last record: that record and what follows are cut.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (_, r) = open(dir.path(), Durability::Written);
    assert_eq!(seqs(&r), [0, 1]);
    assert!(r.truncated_bytes > 0);
}

#[test]
fn done_must_name_a_committed_pending_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (mut o, _) = open(dir.path(), Durability::Written);
    let a = o.append(b"t", b"a").unwrap();
    assert!(matches!(o.done(a), Err(OutboxError::NotPending { .. })));
    o.commit().unwrap();
    o.done(a).unwrap();
    assert!(matches!(
        o.done(a),
        Err(OutboxError::NotPending { oldest: None, .. })
    ));
    assert!(matches!(
        o.append(&[b'x'; 70_000], b""),
        Err(OutboxError::TopicTooLong(70_000))
    ));
}

#[test]
fn compaction_truncates_when_all_are_done_and_rewrites_the_pending_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (mut o, _) = Outbox::open(dir.path(), Durability::Fsync, 4096).unwrap();
    let body = [7u8; 200];
    // Everything done: the file empties itself once past the limit.
    for _ in 0..30 {
        let s = o.append(b"t", &body).unwrap();
        o.commit().unwrap();
        o.done(s).unwrap();
    }
    assert!(o.file_len() <= 4096, "{}", o.file_len());
    // Some pending while the file grows: only they are kept, with their numbers.
    let keep = o.append(b"t", b"keep me").unwrap();
    o.commit().unwrap();
    for _ in 0..30 {
        o.append(b"t", &body).unwrap();
        o.commit().unwrap();
    }
    // Nothing done since (acknowledgements come in order, `keep` first): compact by hand,
    // with one alert appended and not yet committed.
    o.append(b"t", b"uncommitted").unwrap();
    let before = o.file_len();
    o.compact().unwrap();
    assert!(
        o.file_len() < before,
        "the done records and alerts are gone"
    );
    let len_after = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len_after, o.file_len());
    o.commit().unwrap();
    drop(o);
    let (_, r) = Outbox::open(dir.path(), Durability::Fsync, 4096).unwrap();
    assert_eq!(
        r.pending.len(),
        32,
        "keep, 30 bodies, and the one committed after"
    );
    assert_eq!(r.pending[0].seq, keep);
    assert_eq!(r.pending[0].payload, b"keep me");
    assert_eq!(r.pending[31].payload, b"uncommitted");
    assert!(!path.with_extension("compact").exists());
}

/// The writer side of the crash test: appends and commits `OUTBOX_CHILD_N` alerts, marks the
/// first half done, says so on stdout, then waits to be killed.
#[test]
#[ignore = "run by outbox_survives_kill_9 in a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("OUTBOX_CHILD_DIR") else {
        return;
    };
    let n: u64 = std::env::var("OUTBOX_CHILD_N").unwrap().parse().unwrap();
    let durability = match std::env::var("OUTBOX_CHILD_SYNC").as_deref() {
        Ok("fsync") => Durability::Fsync,
        _ => Durability::Written,
    };
    let (mut o, _) = Outbox::open(Path::new(&dir), durability, 1 << 30).unwrap();
    for i in 0..n {
        o.append(b"t", format!("alert {i}").as_bytes()).unwrap();
        o.commit().unwrap();
    }
    o.done(n / 2 - 1).unwrap();
    // Appended, never committed: must not come back.
    o.append(b"t", b"lost by design").unwrap();
    println!("committed {n}");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn outbox_survives_kill_9() {
    for sync in ["written", "fsync"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "io::outbox::store::tests::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("OUTBOX_CHILD_DIR", dir.path())
            .env("OUTBOX_CHILD_N", "200")
            .env("OUTBOX_CHILD_SYNC", sync)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut seen = String::new();
        let mut chunk = [0u8; 256];
        while !seen.contains("committed 200") {
            let n = out.read(&mut chunk).unwrap();
            assert!(n > 0, "the writer ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        // SIGKILL: no destructor, no flush, nothing of the writer runs again.
        child.kill().unwrap();
        child.wait().unwrap();
        let (_, r) = open(dir.path(), Durability::Written);
        assert_eq!(seqs(&r), (100..200).collect::<Vec<u64>>(), "{sync}");
        assert_eq!(r.pending[0].payload, b"alert 100");
        assert_eq!(r.truncated_bytes, 0);
    }
}

#[test]
fn one_process_per_outbox_even_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut o, _) = Outbox::open(dir.path(), Durability::Written, 64).unwrap();
    let second = Outbox::open(dir.path(), Durability::Written, 64).unwrap_err();
    assert!(matches!(second, OutboxError::Locked { .. }), "{second}");
    assert!(second.to_string().contains("another process"), "{second}");
    // Compaction replaces the file: the lock moves with it.
    for i in 0..8u8 {
        o.append(b"t", &[i; 16]).unwrap();
        o.commit().unwrap();
    }
    o.done(0).unwrap();
    assert!(o.file_len() < 8 * 40, "compacted");
    assert!(matches!(
        Outbox::open(dir.path(), Durability::Written, 64),
        Err(OutboxError::Locked { .. })
    ));
    drop(o);
    let (_, r) = Outbox::open(dir.path(), Durability::Written, 64).unwrap();
    assert_eq!(seqs(&r), [1, 2, 3, 4, 5, 6, 7]);
}
