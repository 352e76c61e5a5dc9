//! The disk backlog of the push (`--backlog-dir DIR`): one file per report.
//!
//! Every report the pusher makes is written here before it is queued (a
//! [`Spool`] of [`wirelens_proto::client::Pusher`]) and deleted once the
//! control plane answered 2xx (or the report was dropped and counted). So a
//! node that is SIGKILLed, loses power or cannot reach the control plane for
//! an hour sends what it measured when it runs again: the files of an
//! earlier run are queued first, oldest first, before the new reports, each
//! with the `(node, instance, seq)` it was made with, so the control plane's
//! idempotency counts a report delivered just before a crash once.
//!
//! A file, `DIR/<key, 20 digits>.report`, all integers little-endian:
//!
//! ```text
//! 0   4  magic "WLBK"
//! 4   1  version (1)
//! 5   1  encoding of the body (0 json, 1 json+gzip, 2 json+zstd, 3 compact+zstd, 4 compact)
//! 6   2  zero
//! 8   4  flow deltas in the report
//! 12  4  body length
//! 16  4  CRC-32 of the body
//! 20  4  CRC-32 of bytes 0..20
//! 24  .. the body, as it goes on the wire
//! ```
//!
//! Written to `<key>.report.tmp`, fsync'd, renamed, the directory fsync'd.
//! A file that fails its checks (a torn write, a flipped bit, a `.tmp` a
//! crash left) is deleted, counted by reason and never sent; when its header
//! holds, when it is read, so that its flows count as dropped. Other files in
//! the directory are left alone. The directory is created `0700`.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wirelens_proto::client::{Spool, Spooled};
use wirelens_proto::codec::Encoding;

const MAGIC: &[u8; 4] = b"WLBK";
const VERSION: u8 = 1;
const HEADER: usize = 24;
const SUFFIX: &str = ".report";
const TMP_SUFFIX: &str = ".report.tmp";

/// Why a backlog file was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// Bad magic, an unknown version or encoding, or a header checksum that fails.
    Header,
    /// Shorter or longer than its header says (a torn write).
    Short,
    /// The body's checksum fails.
    Checksum,
    /// A `.tmp` file: a write that did not finish.
    Unfinished,
}

impl Corrupt {
    pub const ALL: [Corrupt; 4] = [
        Corrupt::Header,
        Corrupt::Short,
        Corrupt::Checksum,
        Corrupt::Unfinished,
    ];

    /// The `reason` label of `wirelens_push_backlog_corrupt_total`.
    pub fn label(self) -> &'static str {
        match self {
            Corrupt::Header => "header",
            Corrupt::Short => "short",
            Corrupt::Checksum => "checksum",
            Corrupt::Unfinished => "unfinished",
        }
    }
}

/// What the disk backlog counted (shared with the metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BacklogCounts {
    /// Reports an earlier run left, queued at the start.
    pub replayed: u64,
    /// Files deleted unsent, by [`Corrupt::ALL`]'s order.
    pub corrupt: [u64; 4],
}

impl BacklogCounts {
    pub fn corrupt(&self, why: Corrupt) -> u64 {
        self.corrupt[why as usize]
    }
}

/// The reports of one directory; see the [module documentation](self).
#[derive(Debug)]
pub struct DiskBacklog {
    dir: PathBuf,
    next_key: u64,
    pending: Vec<Spooled>,
    counts: Arc<Mutex<BacklogCounts>>,
}

fn encoding_code(e: Encoding) -> u8 {
    match e {
        Encoding::Json => 0,
        Encoding::JsonGzip => 1,
        Encoding::JsonZstd => 2,
        Encoding::Compact => 3,
        Encoding::CompactPlain => 4,
    }
}

fn encoding_of(code: u8) -> Option<Encoding> {
    Some(match code {
        0 => Encoding::Json,
        1 => Encoding::JsonGzip,
        2 => Encoding::JsonZstd,
        3 => Encoding::Compact,
        4 => Encoding::CompactPlain,
        _ => return None,
    })
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The header of a report of `flows` deltas and body `body`.
fn header(flows: usize, enc: Encoding, body: &[u8]) -> io::Result<[u8; HEADER]> {
    let too_big = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
    let flows = u32::try_from(flows).map_err(|_| too_big("too many flow deltas for one file"))?;
    let len = u32::try_from(body.len()).map_err(|_| too_big("a body over 4 GiB"))?;
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = encoding_code(enc);
    h[8..12].copy_from_slice(&flows.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h[16..20].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let hc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&hc.to_le_bytes());
    Ok(h)
}

/// A checked header: (flows, encoding, body length, body CRC).
fn parse_header(h: &[u8]) -> Result<(usize, Encoding, usize, u32), Corrupt> {
    if h.len() < HEADER {
        return Err(Corrupt::Short);
    }
    if &h[..4] != MAGIC || h[4] != VERSION || le32(h, 20) != crc32fast::hash(&h[..20]) {
        return Err(Corrupt::Header);
    }
    let enc = encoding_of(h[5]).ok_or(Corrupt::Header)?;
    Ok((le32(h, 8) as usize, enc, le32(h, 12) as usize, le32(h, 16)))
}

/// One file's bytes checked: its body.
fn check(bytes: &[u8]) -> Result<&[u8], Corrupt> {
    let (_, _, len, crc) = parse_header(bytes)?;
    let body = &bytes[HEADER..];
    if body.len() != len {
        return Err(Corrupt::Short);
    }
    if crc32fast::hash(body) != crc {
        return Err(Corrupt::Checksum);
    }
    Ok(body)
}

/// The key of a file name `<key>.report` (`tmp`: of `<key>.report.tmp`).
fn key_of(name: &str, tmp: bool) -> Option<u64> {
    let stem = name.strip_suffix(if tmp { TMP_SUFFIX } else { SUFFIX })?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl DiskBacklog {
    /// Opens (creates, `0700`) `dir`, checks that files can be written
    /// there, and takes stock of what an earlier run left: broken files are
    /// deleted and counted, the others become [`Spool::take_pending`].
    pub fn open(dir: &Path, counts: Arc<Mutex<BacklogCounts>>) -> Result<DiskBacklog, String> {
        let d = dir.display();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("--backlog-dir {d}: cannot create it: {e}"))?;
        let mut b = DiskBacklog {
            dir: dir.to_path_buf(),
            next_key: 0,
            pending: Vec::new(),
            counts,
        };
        let entries = fs::read_dir(dir).map_err(|e| format!("--backlog-dir {d}: {e}"))?;
        let mut broken = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("--backlog-dir {d}: {e}"))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(k) = key_of(&name, true) {
                b.next_key = b.next_key.max(k.saturating_add(1));
                broken.push((entry.path(), Corrupt::Unfinished));
                continue;
            }
            let Some(key) = key_of(&name, false) else {
                continue;
            };
            b.next_key = b.next_key.max(key.saturating_add(1));
            match Self::stat(&entry.path()) {
                Ok((flows, encoding, len)) => b.pending.push(Spooled {
                    key,
                    flows,
                    encoding,
                    len,
                }),
                Err(why) => broken.push((entry.path(), why)),
            }
        }
        for (path, why) in broken {
            b.discard(&path, why);
        }
        b.pending.sort_by_key(|s| s.key);
        // Can we write here (a read-only mount, another user's directory)?
        let probe = b.dir.join(".wirelens-write-test");
        let _ = fs::remove_file(&probe);
        b.write_file(&probe, &[])
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|e| format!("--backlog-dir {d}: cannot write there: {e}"))?;
        Ok(b)
    }

    /// What this backlog counts, shared.
    pub fn counts(&self) -> Arc<Mutex<BacklogCounts>> {
        self.counts.clone()
    }

    /// (flows, encoding, body length) from a file's header. A file whose
    /// header holds but whose body does not stays queued: it fails when it
    /// is read, and its flows are counted as dropped then (the header's
    /// count is checked, so it is right).
    fn stat(path: &Path) -> Result<(usize, Encoding, usize), Corrupt> {
        let mut h = [0u8; HEADER];
        let mut f = File::open(path).map_err(|_| Corrupt::Short)?;
        f.read_exact(&mut h).map_err(|_| Corrupt::Short)?;
        let (flows, enc, len, _) = parse_header(&h)?;
        Ok((flows, enc, len))
    }

    fn path(&self, key: u64) -> PathBuf {
        self.dir.join(format!("{key:020}{SUFFIX}"))
    }

    /// Deletes a broken file and counts it.
    fn discard(&self, path: &Path, why: Corrupt) {
        let _ = fs::remove_file(path);
        eprintln!(
            "wirelens: push backlog: {} is {}: deleted, not sent",
            path.display(),
            match why {
                Corrupt::Header => "not a report file of this version (header)",
                Corrupt::Short => "torn (shorter or longer than its header says)",
                Corrupt::Checksum => "corrupt (body checksum)",
                Corrupt::Unfinished => "a write that did not finish",
            }
        );
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .corrupt[why as usize] += 1;
    }

    /// Writes `data` to `path` (created `0600`) and fsyncs it.
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(data)?;
        f.sync_all()
    }
}

impl Spool for DiskBacklog {
    fn take_pending(&mut self) -> Vec<Spooled> {
        let p = std::mem::take(&mut self.pending);
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replayed += p.len() as u64;
        p
    }

    fn store(&mut self, flows: usize, encoding: Encoding, body: &[u8]) -> io::Result<u64> {
        let key = self.next_key;
        let h = header(flows, encoding, body)?;
        let mut data = Vec::with_capacity(HEADER + body.len());
        data.extend_from_slice(&h);
        data.extend_from_slice(body);
        let path = self.path(key);
        let tmp = self.dir.join(format!("{key:020}{TMP_SUFFIX}"));
        let done = self
            .write_file(&tmp, &data)
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.next_key += 1;
        Ok(key)
    }

    fn load(&mut self, key: u64) -> io::Result<Vec<u8>> {
        let path = self.path(key);
        let mut bytes = fs::read(&path)?;
        match check(&bytes) {
            Ok(_) => Ok(bytes.split_off(HEADER)),
            Err(why) => {
                self.discard(&path, why);
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {}", path.display(), why.label()),
                ))
            }
        }
    }

    fn remove(&mut self, key: u64) {
        let _ = fs::remove_file(self.path(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wirelens_proto::client::{Pusher, PusherConfig};
    use wirelens_proto::codec;
    use wirelens_proto::report::{FlowDelta, NodeMeta, NodeReport};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir()
                .join(format!("wirelens-backlog-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn open(dir: &Path) -> (DiskBacklog, Arc<Mutex<BacklogCounts>>) {
        let c = Arc::new(Mutex::new(BacklogCounts::default()));
        (DiskBacklog::open(dir, c.clone()).unwrap(), c)
    }

    fn counts(c: &Arc<Mutex<BacklogCounts>>) -> BacklogCounts {
        *c.lock().unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn reports_round_trip_in_order_across_a_restart() {
        let t = TempDir::new("round");
        let (mut b, c) = open(&t.0);
        assert!(b.take_pending().is_empty());
        let bodies: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100 + i as usize]).collect();
        let keys: Vec<u64> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| b.store(10 + i, Encoding::Compact, body).unwrap())
            .collect();
        assert_eq!(keys, vec![0, 1, 2]);
        b.remove(1);
        let mode = fs::metadata(&t.0).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        drop(b);
        // The next run finds 0 and 2, oldest first, and numbers after them.
        let (mut b, c2) = open(&t.0);
        let p = b.take_pending();
        let got: Vec<(u64, usize, Encoding, usize)> = p
            .iter()
            .map(|s| (s.key, s.flows, s.encoding, s.len))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, Encoding::Compact, 100),
                (2, 12, Encoding::Compact, 102)
            ]
        );
        assert_eq!(b.load(0).unwrap(), bodies[0]);
        assert_eq!(b.load(2).unwrap(), bodies[2]);
        assert_eq!(b.store(1, Encoding::Json, b"{}").unwrap(), 3);
        assert_eq!(counts(&c2).replayed, 2);
        assert_eq!(counts(&c), BacklogCounts::default());
        // An empty body is a report too (a report of probe windows only is not empty, but still).
        assert_eq!(b.store(0, Encoding::Json, b"").unwrap(), 4);
        assert_eq!(b.load(4).unwrap(), b"");
    }

    #[test]
    fn torn_short_and_flipped_files_are_counted_deleted_and_never_sent() {
        let t = TempDir::new("torn");
        let (mut b, _) = open(&t.0);
        for i in 0..5u8 {
            b.store(1, Encoding::Json, &[b'x' + i; 64]).unwrap();
        }
        drop(b);
        let f = |k: u64| t.0.join(format!("{k:020}.report"));
        // 0: torn in the body; 1: torn in the header; 2: a body bit flipped;
        // 3: a header bit flipped; 4 intact; plus a write that did not finish
        // and a file that is not ours.
        let full = fs::read(f(0)).unwrap();
        fs::write(f(0), &full[..40]).unwrap();
        fs::write(f(1), &full[..10]).unwrap();
        let mut x = fs::read(f(2)).unwrap();
        x[HEADER + 5] ^= 1;
        fs::write(f(2), &x).unwrap();
        let mut x = fs::read(f(3)).unwrap();
        x[8] ^= 1;
        fs::write(f(3), &x).unwrap();
        fs::write(t.0.join(format!("{:020}.report.tmp", 5)), b"WLBK").unwrap();
        fs::write(t.0.join("notes.txt"), b"keep me").unwrap();
        let (mut b, c) = open(&t.0);
        let keys: Vec<u64> = b.take_pending().iter().map(|s| s.key).collect();
        // A torn or flipped body behind a good header fails when it is read
        // (and the pusher counts its flows as dropped).
        assert_eq!(keys, vec![0, 2, 4]);
        let n = counts(&c);
        assert_eq!(
            (
                n.corrupt(Corrupt::Short),
                n.corrupt(Corrupt::Header),
                n.corrupt(Corrupt::Unfinished),
                n.corrupt(Corrupt::Checksum)
            ),
            (1, 1, 1, 0)
        );
        let e = b.load(2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(counts(&c).corrupt(Corrupt::Checksum), 1);
        assert!(b.load(0).is_err());
        assert_eq!(counts(&c).corrupt(Corrupt::Short), 2);
        assert_eq!(b.load(4).unwrap(), vec![b'x' + 4; 64]);
        assert_eq!(
            files(&t.0),
            vec![format!("{:020}.report", 4), "notes.txt".to_string()]
        );
        // Numbering goes on after the largest key seen, the .tmp's included.
        assert_eq!(b.store(1, Encoding::Json, b"{}").unwrap(), 6);
    }

    #[test]
    fn an_unusable_directory_is_a_clear_error() {
        let t = TempDir::new("unusable");
        fs::create_dir_all(&t.0).unwrap();
        let file = t.0.join("a-file");
        fs::write(&file, b"").unwrap();
        let c = Arc::new(Mutex::new(BacklogCounts::default()));
        let e = DiskBacklog::open(&file.join("sub"), c.clone()).unwrap_err();
        assert!(e.starts_with("--backlog-dir "), "{e}");
        assert!(e.contains("cannot create it"), "{e}");
        let e = DiskBacklog::open(&file, c).unwrap_err();
        assert!(e.contains("a-file"), "{e}");
    }

    fn deltas(n: usize) -> Vec<FlowDelta> {
        (0..n)
            .map(|i| {
                FlowDelta::from_record(wirelens_proto::testutil::flow(
                    &format!("198.18.{}.{}:{}", i / 250 % 250, i % 250, 1024 + i),
                    "198.18.200.2:443",
                    1_000 + i as u64,
                    2_000,
                ))
            })
            .collect()
    }

    /// A pusher whose control plane is down (nothing listens on port 9).
    fn offline(instance: u64, backlog_bytes: usize) -> Pusher {
        Pusher::new(PusherConfig {
            url: "http://127.0.0.1:9".into(),
            node: "n1".into(),
            token: "token-123".into(),
            instance,
            meta: NodeMeta::default(),
            backlog_bytes,
            timeout: Duration::from_secs(2),
            encoding: Encoding::Compact,
        })
    }

    /// The reports in the directory, in key order.
    fn on_disk(dir: &Path) -> Vec<NodeReport> {
        let (mut b, _) = open(dir);
        b.take_pending()
            .iter()
            .map(|s| {
                let (ct, ce) = codec::headers(s.encoding);
                codec::decode(Some(ct), ce, &b.load(s.key).unwrap(), usize::MAX).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_disk_bound_drops_the_oldest_and_counts_them() {
        let t = TempDir::new("bound");
        let one = {
            let mut p = offline(1, usize::MAX);
            p.enqueue(deltas(100), 10);
            p.backlog_bytes()
        };
        // Room on disk for three reports; memory for one.
        let (b, _) = open(&t.0);
        let mut p = offline(1, one + one / 2).with_spool(Box::new(b), one * 3 + one / 2);
        for k in 0..6u64 {
            p.enqueue(deltas(100), 10 + k);
        }
        let s = p.stats();
        assert_eq!((s.dropped_reports, s.dropped_flows), (3, 300));
        assert_eq!(p.backlog(), 3);
        assert!(p.spooled_bytes() <= one * 3 + one / 2);
        assert!(p.backlog_bytes() <= one + one / 2, "memory holds one");
        let reps = on_disk(&t.0);
        assert_eq!(
            reps.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!((reps[2].dropped_reports, reps[2].dropped_flows), (3, 300));
        // The control plane is down: nothing leaves the directory.
        assert!(p.flush().unwrap_err().is_retryable());
        assert_eq!(on_disk(&t.0).len(), 3);
    }

    #[test]
    fn a_report_the_directory_does_not_take_stays_in_memory_counted() {
        let t = TempDir::new("gone");
        let (b, _) = open(&t.0);
        let mut p = offline(1, 64 << 20).with_spool(Box::new(b), 64 << 20);
        p.enqueue(deltas(10), 10);
        // The directory goes away under the node (an unmounted disk).
        fs::remove_dir_all(&t.0).unwrap();
        p.enqueue(deltas(10), 11);
        let s = p.stats();
        assert_eq!((s.spool_write_errors, s.dropped_reports), (1, 0));
        assert_eq!(p.backlog(), 2);
        assert!(p.backlog_bytes() > 0);
        // Sending reads the first one from memory, not from the missing file.
        assert!(p.flush().unwrap_err().is_retryable());
        assert_eq!((p.backlog(), p.stats().spool_unreadable), (2, 0));
    }

    #[test]
    fn a_restart_replays_the_earlier_reports_first_with_their_own_seq() {
        let t = TempDir::new("replay");
        let (b, _) = open(&t.0);
        let mut p = offline(111, 64 << 20).with_spool(Box::new(b), 64 << 20);
        for k in 0..3u64 {
            p.enqueue(deltas(50), 10 + k);
        }
        assert_eq!(p.stats().replayed, 0);
        // SIGKILL: nothing more than the files is left.
        drop(p);
        let c = Arc::new(Mutex::new(BacklogCounts::default()));
        let b = DiskBacklog::open(&t.0, c.clone()).unwrap();
        let mut p = offline(222, 64 << 20).with_spool(Box::new(b), 64 << 20);
        assert_eq!((p.stats().replayed, p.backlog()), (3, 3));
        assert_eq!(counts(&c).replayed, 3);
        p.enqueue(deltas(7), 20);
        assert_eq!(p.backlog(), 4);
        let ids: Vec<(u64, u64, usize)> = on_disk(&t.0)
            .iter()
            .map(|r| (r.instance, r.seq, r.flows.len()))
            .collect();
        assert_eq!(
            ids,
            vec![(111, 0, 50), (111, 1, 50), (111, 2, 50), (222, 0, 7)]
        );
        // A file that rotted meanwhile is dropped and counted, never sent.
        let first = t.0.join(format!("{:020}.report", 0));
        let mut x = fs::read(&first).unwrap();
        let n = x.len();
        x[n - 1] ^= 0xff;
        fs::write(&first, &x).unwrap();
        assert!(p.flush().unwrap_err().is_retryable());
        let s = p.stats();
        assert_eq!(
            (s.spool_unreadable, s.dropped_reports, s.dropped_flows),
            (1, 1, 50)
        );
        assert_eq!(counts(&c).corrupt(Corrupt::Checksum), 1);
        assert_eq!(p.backlog(), 3);
    }
}
